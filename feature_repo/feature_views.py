"""Feature views, built from the one declaration in pipeline.features."""

from datetime import timedelta

from data_sources import customer_source, item_source
from entities import customer, item
from feast import FeatureView, Field
from feast.types import Float32, String

from pipeline.features import CUSTOMER_FEATURES, CUSTOMER_VIEW, ITEM_FEATURES, ITEM_VIEW, Feature

_FEAST_TYPES = {"float": Float32, "string": String}


def _schema(features: tuple[Feature, ...]) -> list[Field]:
    return [
        Field(name=f.name, dtype=_FEAST_TYPES[f.dtype], description=f.description) for f in features
    ]


customer_features = FeatureView(
    name=CUSTOMER_VIEW,
    entities=[customer],
    # Snapshots are daily; zero TTL means a snapshot never expires (the latest one wins).
    ttl=timedelta(0),
    schema=_schema(CUSTOMER_FEATURES),
    source=customer_source,
    online=True,
    tags={"owner": "fitrec", "pii": "derived-body-scores"},
)
item_features = FeatureView(
    name=ITEM_VIEW,
    entities=[item],
    ttl=timedelta(0),
    schema=_schema(ITEM_FEATURES),
    source=item_source,
    online=True,
    tags={"owner": "fitrec"},
)
