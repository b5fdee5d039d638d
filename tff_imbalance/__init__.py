"""tff-imbalance: federated learning under class imbalance, on TFF.

Importing any module of the package runs this first: it quiets TensorFlow's
C++ log (the oneDNN notice, duplicate CUDA plugin registration, logged on
every import) unless the user set `TF_CPP_MIN_LOG_LEVEL` themselves. That
variable is read when TensorFlow's C++ library loads, so it must be set
before the first `import tensorflow`, i.e. here. Nothing else happens at
import: the execution context is installed when a run starts
(`runtime.set_execution_context`).
"""

import os

# 3: only FATAL; the C++ start-up chatter above is logged at ERROR level.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
