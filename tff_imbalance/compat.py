"""The TFF API spellings that move between releases, in one place.

TFF renamed `tff.tf_computation` to `tff.tensorflow.computation` and moved
`tensorflow_to_type` between modules across 0.6x-0.8x releases; every module of
this project imports them from here so that a TFF upgrade touches one file.
Importing this module also imports `runtime`, whose `atexit` hook lets TFF's
default context stop its worker cleanly at exit; it installs no context.
(TensorFlow's log level is set by the package's `__init__`, which runs first.)
"""

import tensorflow_federated as tff

from tff_imbalance import runtime  # pylint: disable=unused-import

tf_computation = tff.tensorflow.computation
federated_computation = tff.federated_computation
tensorflow_to_type = tff.types.tensorflow_to_type
