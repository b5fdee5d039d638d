"""TFF's C++ execution context, started and stopped by us.

TFF 0.87 runs every computation in a C++ `worker_binary` child process that it
talks to over gRPC. Its own factory (`tff.framework.local_cpp_executor_factory`,
installed as the default context when TFF is imported) kills that child from a
`__del__` that runs at interpreter shutdown, when the `subprocess` module is
already gone: it prints "'NoneType' object has no attribute 'Popen'" and can
leave the worker alive holding our stdout, which hangs pipes and test runners.

Importing this module replaces that default with an equivalent context whose
worker we start lazily (on the first computation) and stop from an `atexit`
hook while Python is still whole. `set_local_execution_context` chooses the
setting that matters for speed (measured on 2 cores, see DESIGN.md):
`max_concurrent_computation_calls` about the core count.
"""

import atexit
import os
import signal
import subprocess
import threading
import time
from typing import Optional

from absl import logging
import grpc
import portpicker
import tensorflow_federated as tff

_GRPC_MAX_MESSAGE_BYTES = 2 * 1000 * 1000 * 1000
_GRPC_CHANNEL_OPTIONS = (
    ('grpc.max_message_length', _GRPC_MAX_MESSAGE_BYTES),
    ('grpc.max_receive_message_length', _GRPC_MAX_MESSAGE_BYTES),
    ('grpc.max_send_message_length', _GRPC_MAX_MESSAGE_BYTES),
)
_WORKER_START_TIMEOUT_SECONDS = 60.0
# The worker logs grappler INFO lines for every computation; TF's own import
# resets TF_CPP_MIN_LOG_LEVEL to 1 in our process, so set the child's level.
_WORKER_LOG_LEVEL = '2'


def worker_binary_path() -> str:
  """The C++ worker that ships inside the TFF wheel."""
  return os.path.join(os.path.dirname(tff.__file__), 'data', 'worker_binary')


class LocalWorker:
  """One `worker_binary` child process serving on a loopback port."""

  def __init__(self, max_concurrent_computation_calls: int):
    self.port = portpicker.pick_unused_port()
    self.max_concurrent_computation_calls = max_concurrent_computation_calls
    self._process: Optional[subprocess.Popen] = subprocess.Popen(
        [
            worker_binary_path(),
            f'--port={self.port}',
            f'--max_concurrent_computation_calls={max_concurrent_computation_calls}',
        ],
        # Never let the worker inherit our stdout: a reader of our pipe would
        # wait on it after we exit. Its stderr carries real errors; keep it.
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': _WORKER_LOG_LEVEL},
    )
    atexit.register(self.stop)
    channel = grpc.insecure_channel(f'localhost:{self.port}',
                                    _GRPC_CHANNEL_OPTIONS)
    self.stub = tff.framework.RemoteExecutorGrpcStub(channel)
    self._wait_until_ready()

  def _wait_until_ready(self) -> None:
    deadline = time.monotonic() + _WORKER_START_TIMEOUT_SECONDS
    while not self.stub.is_ready:
      if self._process.poll() is not None or time.monotonic() > deadline:
        self.stop()
        raise RuntimeError(
            f'TFF worker {worker_binary_path()} did not start on port '
            f'{self.port}; see its messages above.')
      time.sleep(0.05)

  def stop(self) -> None:
    """Stops the worker (idempotent)."""
    process, self._process = self._process, None
    if process is None or process.poll() is not None:
      return
    process.send_signal(signal.SIGINT)
    try:
      process.wait(timeout=10)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()


class _LazyWorker:
  """Starts a `LocalWorker` on first use, restarts it if it died."""

  def __init__(self, max_concurrent_computation_calls: int):
    self._max_calls = max_concurrent_computation_calls
    self._worker: Optional[LocalWorker] = None
    self._lock = threading.Lock()

  def stub(self):
    with self._lock:
      if self._worker is None or not self._worker.stub.is_ready:
        if self._worker is not None:
          self._worker.stop()
        self._worker = LocalWorker(self._max_calls)
        logging.info('TFF C++ worker on port %d, '
                     'max_concurrent_computation_calls=%d.', self._worker.port,
                     self._max_calls)
      return self._worker.stub

  def stop(self) -> None:
    with self._lock:
      if self._worker is not None:
        self._worker.stop()
        self._worker = None


def _context_for_worker(lazy_worker: _LazyWorker):
  def stack_fn(cardinalities):
    # Computations without CLIENTS-placed arguments still need a cardinality.
    cardinalities.setdefault(tff.CLIENTS, 0)
    executor = tff.framework.RemoteExecutor(lazy_worker.stub())
    executor.set_cardinalities(cardinalities)
    return executor

  return tff.framework.SyncExecutionContext(
      executor_fn=tff.framework.ResourceManagingExecutorFactory(
          executor_stack_fn=stack_fn),
      compiler_fn=tff.backends.native.desugar_and_transform_to_native,
      transform_args=tff.tensorflow.transform_args,
      transform_result=tff.tensorflow.transform_result,
  )


_ACTIVE_WORKER: Optional[_LazyWorker] = None


def set_local_execution_context(
    max_concurrent_computation_calls: Optional[int] = None) -> None:
  """Makes a local C++ worker, started on first use, TFF's default context.

  Args:
    max_concurrent_computation_calls: clients trained at once by the worker;
      defaults to the number of CPU cores.
  """
  global _ACTIVE_WORKER
  if max_concurrent_computation_calls is None:
    max_concurrent_computation_calls = os.cpu_count() or 1
  if _ACTIVE_WORKER is not None:
    _ACTIVE_WORKER.stop()
  _ACTIVE_WORKER = _LazyWorker(max_concurrent_computation_calls)
  tff.framework.get_context_stack().set_default_context(
      _context_for_worker(_ACTIVE_WORKER))


# Replacing TFF's import-time default context drops its ServiceManager now,
# while `subprocess` still exists, instead of at interpreter shutdown.
set_local_execution_context()
