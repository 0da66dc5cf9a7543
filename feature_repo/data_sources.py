"""Sources: the Parquet feature tables pipeline.features.build writes, and the live session push.

The tables are under the data dir of this environment, resolved as for the registry and the
online store (pipeline.features.store.environment_settings), so stock Feast and fitrec agree.
"""

from feast import FileSource, PushSource

from pipeline.features.build import feature_paths
from pipeline.features.declarations import (
    CUSTOMER_VIEW,
    ITEM_VIEW,
    SESSION_PUSH,
    SESSION_VIEW,
    TIMESTAMP,
)
from pipeline.features.store import environment_settings

_paths = feature_paths(environment_settings().features_dir)

customer_source = FileSource(
    name=f"{CUSTOMER_VIEW}_source",
    path=str(_paths[CUSTOMER_VIEW]),
    timestamp_field=TIMESTAMP,
    description="Daily customer snapshots (pipeline.features.build.customer_features).",
)
item_source = FileSource(
    name=f"{ITEM_VIEW}_source",
    path=str(_paths[ITEM_VIEW]),
    timestamp_field=TIMESTAMP,
    description="Daily item snapshots (pipeline.features.build.item_features).",
)
session_batch_source = FileSource(
    name=f"{SESSION_VIEW}_source",
    path=str(_paths[SESSION_VIEW]),
    timestamp_field=TIMESTAMP,
    description="Final state of past sessions (pipeline.features.build.session_features).",
)
session_push = PushSource(
    name=SESSION_PUSH,
    batch_source=session_batch_source,
    description="Live session state, pushed by serving on every event.",
)
