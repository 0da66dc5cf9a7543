"""Feature services, one per model generation: training and serving ask for the same one."""

from feast import FeatureService
from feature_views import customer_features, fit_match_view, item_features, session_features

from pipeline.features.declarations import FEATURE_SERVICES

_VIEWS = {
    view.name: view for view in (customer_features, item_features, session_features, fit_match_view)
}

# Module-level names are what `feast apply` collects: one per declared service.
for _name, _views in FEATURE_SERVICES.items():
    globals()[_name] = FeatureService(
        name=_name,
        features=[_VIEWS[view] for view in _views],
        description=f"Features of the {_name} model generation.",
        tags={"generation": _name.rsplit("_", 1)[-1]},
    )
