"""MLflow "models from code" entry point for the recommender's pyfunc flavour.

MLflow runs this file when it loads the model, instead of unpickling an object; nothing
in fitrec imports it.
"""

from mlflow.models import set_model

from pipeline.registry.pyfunc import FitrecPyfunc

set_model(FitrecPyfunc())
