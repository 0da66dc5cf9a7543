"""Feature views, built from the one declaration in pipeline.features."""

import pandas as pd
from data_sources import customer_source, item_source, session_push
from entities import customer, item, session
from feast import FeatureView, Field, StreamFeatureView
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Array, Float32, String

from pipeline.features.declarations import (
    CUSTOMER_FEATURES,
    CUSTOMER_VIEW,
    FIT_FEATURES,
    FIT_VIEW,
    ITEM_FEATURES,
    ITEM_VIEW,
    SESSION_FEATURES,
    SESSION_TTL,
    SESSION_VIEW,
    SNAPSHOT_TTL,
    Feature,
)
from pipeline.features.garment_fit import BODY_COLUMNS, INPUTS

_FEAST_TYPES = {"float": Float32, "string": String, "string_list": Array(String)}


def _schema(features: tuple[Feature, ...], describe: bool = True) -> list[Field]:
    # On-demand views are validated against fields inferred from the UDF's output, which
    # carry no description, so theirs must not either.
    return [
        Field(
            name=f.name,
            dtype=_FEAST_TYPES[f.dtype],
            description=f.description if describe else "",
        )
        for f in features
    ]


customer_features = FeatureView(
    name=CUSTOMER_VIEW,
    entities=[customer],
    ttl=SNAPSHOT_TTL,
    schema=_schema(CUSTOMER_FEATURES),
    source=customer_source,
    online=True,
    tags={"owner": "fitrec", "pii": "derived-body-scores"},
)
item_features = FeatureView(
    name=ITEM_VIEW,
    entities=[item],
    ttl=SNAPSHOT_TTL,
    schema=_schema(ITEM_FEATURES),
    source=item_source,
    online=True,
    tags={"owner": "fitrec"},
)
session_features = StreamFeatureView(
    name=SESSION_VIEW,
    entities=[session],
    ttl=SESSION_TTL,
    schema=_schema(SESSION_FEATURES),
    source=session_push,
    online=True,
    tags={"owner": "fitrec", "freshness": "pushed per event"},
)


@on_demand_feature_view(
    name=FIT_VIEW,
    sources=[
        customer_features[list(BODY_COLUMNS.values())],
        item_features[[name for name in INPUTS if name not in BODY_COLUMNS.values()]],
    ],
    schema=_schema(FIT_FEATURES, describe=False),
    mode="pandas",
    description="Where the customer's body meets the item's size chart (garment_fit).",
)
def fit_match_view(inputs: pd.DataFrame) -> pd.DataFrame:
    # Feast re-creates the UDF from its source text, so it imports what it needs itself.
    import pandas as pd

    from pipeline.features.garment_fit import fit_match

    return pd.DataFrame(fit_match(inputs, len(inputs)))
