"""The local TFF worker's life: tied to its parent, stopped on SIGTERM.

The task-level checks (a run killed with SIGKILL or stopped with SIGTERM
leaves no worker, and resumes) are in tests/test_resume.py; these check the
pieces in this process.
"""

import os
import signal
import threading
import time

import pytest

from tff_imbalance import runtime


def _is_running(pid):
  """Whether `pid` exists and is not a zombie (an ended, unreaped child)."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      # The state follows the command name, which is in parentheses.
      return f.read().rpartition(')')[2].split()[0] != 'Z'
  except FileNotFoundError:
    return False


@pytest.mark.skipif(not os.path.isdir('/proc/self'), reason='needs /proc')
def test_a_worker_outlives_the_thread_that_started_it():
  # TFF starts the lazy worker from its event-loop thread; PR_SET_PDEATHSIG
  # fires when the forking thread ends, so a worker forked from a short-lived
  # thread would be killed with it.
  started = []
  thread = threading.Thread(
      target=lambda: started.append(runtime.LocalWorker(1)))
  thread.start()
  thread.join()
  worker = started[0]
  try:
    time.sleep(0.5)
    assert _is_running(worker.pid)
    assert worker.stub.is_ready
  finally:
    worker.stop()
  assert worker.pid is None


def test_sigterm_raises_terminated_once():
  previous = signal.getsignal(signal.SIGTERM)
  try:
    runtime.stop_on_sigterm()
    with pytest.raises(runtime.Terminated):
      os.kill(os.getpid(), signal.SIGTERM)
      time.sleep(5)  # The handler runs at the next bytecode; never sleeps.
    # A repeated SIGTERM must not interrupt the clean stop under way.
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
  finally:
    signal.signal(signal.SIGTERM, previous)


def test_a_stop_is_reported_like_a_shell_would():
  assert issubclass(runtime.Terminated, KeyboardInterrupt)
  assert runtime.stop_report(runtime.Terminated(), resumable=True) == (
      'stopped by SIGTERM; the checkpoints are kept: resume with --resume.',
      143)
  message, status = runtime.stop_report(KeyboardInterrupt(), resumable=False)
  assert status == 130
  assert message.startswith('stopped by Ctrl-C (SIGINT)')
  assert '--checkpoint_every' in message
