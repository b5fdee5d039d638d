"""Importing the library changes nothing a user can see, and is quiet.

Each case imports in a fresh interpreter (`python -c`), as a user's program
would: the first project module imported sets TensorFlow's C++ log level
(unless the user set one), no module installs an execution context, and
TFF's own default context still stops its worker cleanly at exit.
"""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# TensorFlow's C++ log lines: '2026-11-30 17:55:51.808542: I tensorflow/...'.
_TF_LOG_LINE = re.compile(r'^\d{4}-\d\d-\d\d [\d:.]+: [IWE] ', re.MULTILINE)
_TEARDOWN_ERROR = "'NoneType' object has no attribute 'Popen'"


# A user's interpreter handles SIGINT (KeyboardInterrupt). A test runner
# started in the background by a non-interactive shell (`pytest &`, CI
# wrappers) inherits SIGINT *ignored*, its `python -c` children too, and so
# would TFF's worker, which TFF stops with SIGINT and then waits for: the
# interpreter would hang at exit for a reason that is the runner's, not the
# library's. The child therefore starts as a user's interpreter does.
_AS_A_USER = ('import signal\n'
              'signal.signal(signal.SIGINT, signal.default_int_handler)\n')


def _python(program, **env):
  environment = {k: v for k, v in os.environ.items()
                 if k != 'TF_CPP_MIN_LOG_LEVEL'}  # conftest sets it.
  environment.update(env)
  # A worker left holding the pipes would make this time out.
  return subprocess.run([sys.executable, '-c', _AS_A_USER + program],
                        cwd=ROOT,
                        env=environment, capture_output=True, text=True,
                        timeout=300, stdin=subprocess.DEVNULL)


def test_importing_a_module_prints_no_tensorflow_log():
  result = _python('import tff_imbalance.losses')
  assert result.returncode == 0, result.stderr
  assert not _TF_LOG_LINE.search(result.stderr), result.stderr
  assert not result.stdout


def test_a_users_log_level_is_kept():
  result = _python('import os, tff_imbalance; '
                   'print(os.environ["TF_CPP_MIN_LOG_LEVEL"])',
                   TF_CPP_MIN_LOG_LEVEL='1')
  assert result.stdout.strip() == '1', result.stderr


def test_importing_the_registry_keeps_tffs_context_usable():
  # The context is held by a weak reference: a strong one would keep TFF's
  # context alive past our exit hook (the teardown error is what it avoids).
  result = _python(
      'import weakref\n'
      'import tensorflow as tf\n'
      'import tensorflow_federated as tff\n'
      'before = weakref.ref(tff.framework.get_context_stack().current)\n'
      'from tff_imbalance.learning import registry\n'
      'assert tff.framework.get_context_stack().current is before()\n'
      'print(tff.tensorflow.computation(lambda: tf.constant(7))())\n',
      TF_CPP_MIN_LOG_LEVEL='3')
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == '7'
  assert _TEARDOWN_ERROR not in result.stderr
