"""Feature services: training and serving ask for the same one."""

from feast import FeatureService
from feature_views import customer_features, item_features

from pipeline.features import FEATURE_SERVICE

recommender_v1 = FeatureService(
    name=FEATURE_SERVICE,
    features=[customer_features, item_features],
    description="Everything the recommender reads: customer and item features.",
)
