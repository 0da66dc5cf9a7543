"""MLflow: tracking and the model registry (champion and challenger aliases), the pyfunc
flavour, and the retrain sequence that trains, evaluates and registers a candidate."""
