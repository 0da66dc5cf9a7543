"""The one place TensorFlow is imported from.

TensorFlow Recommenders 0.7 is written against Keras 2, which ships as ``tf-keras``;
TensorFlow picks it only when ``TF_USE_LEGACY_KERAS=1`` is set before its first import.
Every fitrec module imports ``tf`` and ``tfrs`` from here.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tensorflow_recommenders as tfrs  # noqa: E402

# Subclassed tf-keras models warn that they have no get_config(); they are saved as
# SavedModel signatures, never re-created from config.
tf.get_logger().setLevel("ERROR")

__all__ = ["tf", "tfrs"]
