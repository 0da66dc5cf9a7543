"""fitrec's product code: typed functions over Polars frames, one module per stage.

Nothing here imports Prefect or FastAPI, and importing a module has no side
effects beyond :mod:`pipeline.tfenv`, which pins the Keras flavour TensorFlow
Recommenders needs before TensorFlow is first imported.
"""
