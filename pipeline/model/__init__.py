"""Features to a trained two-tower model: a TensorFlow-free config, examples, model inputs,
priors, the towers and the ``tfrs.Model``, training, the exported bundle, the NumPy fast path
and scoring.

Importing this package (or :mod:`pipeline.model.config`) does not import TensorFlow."""
