"""The TFF API spellings that move between releases, in one place.

TFF renamed `tff.tf_computation` to `tff.tensorflow.computation` and moved
`tensorflow_to_type` between modules across 0.6x-0.8x releases; every module of
this project imports them from here so that a TFF upgrade touches one file.
Importing this module also installs our managed execution context (`runtime`).
"""

import os

# TensorFlow's C++ start-up chatter (oneDNN, duplicate CUDA plugin
# registration, logged at ERROR level on every import) hides our own output.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

# pylint: disable=g-import-not-at-top,g-bad-import-order
import tensorflow_federated as tff
from tff_imbalance import runtime  # pylint: disable=unused-import
# pylint: enable=g-import-not-at-top,g-bad-import-order

tf_computation = tff.tensorflow.computation
federated_computation = tff.federated_computation
tensorflow_to_type = tff.types.tensorflow_to_type
