"""fitrec's product code: typed functions over Polars frames, one module per stage.

Nothing here imports Prefect or FastAPI, and importing a module has no side
effects beyond :mod:`pipeline.tfenv`, which pins the Keras flavour TensorFlow
Recommenders needs before TensorFlow is first imported, and prometheus_client below.
"""

# prometheus_client picks its mode (values in memory, or in files under
# PROMETHEUS_MULTIPROC_DIR) once, when first imported; importing Feast sets that variable to
# a temporary directory of its own when it is unset (feast.metrics). Imported here first, the
# mode follows the environment fitrec was started with (see serving.metrics). Optional: the
# registered model carries this package as its code and has no prometheus_client.
try:
    import prometheus_client  # noqa: F401
except ModuleNotFoundError:
    pass
