"""Batch sources: the Parquet feature tables that pipeline.features writes."""

from feast import FileSource

from pipeline.config import get_settings
from pipeline.features import CUSTOMER_VIEW, ITEM_VIEW, TIMESTAMP, feature_paths

_paths = feature_paths(get_settings().features_dir)

customer_source = FileSource(
    name=f"{CUSTOMER_VIEW}_source",
    path=str(_paths[CUSTOMER_VIEW]),
    timestamp_field=TIMESTAMP,
    description="Daily customer feature snapshots (pipeline.features.customer_features).",
)
item_source = FileSource(
    name=f"{ITEM_VIEW}_source",
    path=str(_paths[ITEM_VIEW]),
    timestamp_field=TIMESTAMP,
    description="Daily item feature snapshots (pipeline.features.item_features).",
)
