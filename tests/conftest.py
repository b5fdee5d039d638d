"""Test-wide settings: quiet TensorFlow, repository root on sys.path, worker."""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pytest_collection_finish(session):
  """Runs the tests' computations on `runtime`'s worker, as the tasks do.

  Importing the package installs no execution context (TFF's default stays);
  where the collected tests imported it, this installs the managed worker,
  which dies with pytest even on SIGKILL (runtime.py), unlike TFF's own.
  """
  del session  # The hook's signature; the imported modules say enough.
  runtime = sys.modules.get('tff_imbalance.runtime')
  if runtime is not None:
    runtime.set_local_execution_context()
