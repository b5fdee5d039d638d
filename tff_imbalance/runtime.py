"""TFF's C++ execution context, started and stopped by us.

TFF 0.87 runs every computation in a C++ `worker_binary` child process that it
talks to over gRPC. Its own factory (`tff.framework.local_cpp_executor_factory`,
installed as the default context when TFF is imported) kills that child from a
`__del__` that runs at interpreter shutdown, when the `subprocess` module is
already gone: it prints "'NoneType' object has no attribute 'Popen'" and can
leave the worker alive holding our stdout, which hangs pipes and test runners.

Importing this module leaves TFF's context as it is (a library import changes
no global state a user could see) and only registers an `atexit` hook that
drops whatever default context is left at exit, while Python is still whole:
TFF's own context then stops its worker from that `__del__`, cleanly.

`set_local_execution_context` (called by the task programs when a run
starts, or by a user) installs an equivalent context whose worker we start
lazily (on the first computation) and stop from an `atexit` hook while
Python is still whole. A run that dies without running `atexit`
(SIGKILL, a crash) takes its worker with it: on Linux the worker is started
with PR_SET_PDEATHSIG = SIGKILL, from one thread that lives as long as the
process (the kernel sends the signal when the *thread* that forked the child
ends, and TFF runs computations, hence our lazy start, on its own event-loop
thread). Elsewhere that guarantee is absent and only `atexit` stops it.
`stop_on_sigterm` (installed by the task programs, not at import) makes
SIGTERM, what schedulers send, stop a run like Ctrl-C.

`set_local_execution_context` chooses the setting that matters for speed
(measured on 2 cores, see DESIGN.md): `max_concurrent_computation_calls`
about the core count.

`set_inprocess_execution_context` runs the same compiled computations in this
process with TensorFlow (`inprocess`), on a GPU where TensorFlow sees one; it
starts no worker and opens no port.

`set_remote_execution_context` runs the same computations on workers started
elsewhere (`python -m tff_imbalance.worker --port=N`): TFF's mergeable context
gives each worker a share of a round's clients, merges their partial
aggregates and finishes the round (0.87 has no other multi-machine runtime;
the Python remote contexts were removed in 0.49/0.50). Its limits, found in
TFF's source and checked here, are enforced with one clear message each:
  * one aggregation per computation, i.e. no aggregate that depends on the
    result of another aggregate in the same call
    (`mergeable_comp_compiler.compile_to_mergeable_comp_form` refuses it);
  * no result placed at CLIENTS: `_invoke_after_merge_in_async_pool` collects
    the workers' shares in the order they finish, so per-client results would
    come back shuffled (we refuse them instead of returning a wrong order);
  * a worker that cannot be reached would be retried forever by
    `AsyncExecutionContext.invoke` (UNAVAILABLE is "retryable"); we stop at
    once with an error naming the worker's address.
"""

import atexit
from concurrent import futures
import collections
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Optional, Sequence

from absl import logging
import grpc
import portpicker
import tensorflow_federated as tff

from tff_imbalance import errors
from tff_imbalance import inprocess

_GRPC_MAX_MESSAGE_BYTES = 2 * 1000 * 1000 * 1000
_GRPC_CHANNEL_OPTIONS = (
    ('grpc.max_message_length', _GRPC_MAX_MESSAGE_BYTES),
    ('grpc.max_receive_message_length', _GRPC_MAX_MESSAGE_BYTES),
    ('grpc.max_send_message_length', _GRPC_MAX_MESSAGE_BYTES),
)
_WORKER_START_TIMEOUT_SECONDS = 60.0
# An idle worker exits on SIGINT within milliseconds; one stopped mid-round
# (a run interrupted by Ctrl-C or SIGTERM) was still running 10 s later, so
# it gets SIGKILL after this grace (it holds nothing worth saving).
_WORKER_STOP_GRACE_SECONDS = 2.0
# The worker logs grappler INFO lines for every computation; TF's own import
# resets TF_CPP_MIN_LOG_LEVEL to 1 in our process, so set the child's level.
_WORKER_LOG_LEVEL = '2'


def worker_binary_path() -> str:
  """The C++ worker that ships inside the TFF wheel."""
  return os.path.join(os.path.dirname(tff.__file__), 'data', 'worker_binary')


def worker_command(port: int,
                   max_concurrent_computation_calls: int) -> list[str]:
  """The `worker_binary` command line serving on `port`.

  The binary listens on every interface (`[::]:port`, hard-coded in TFF
  0.87's `servers.cc`; it has no flag for the address).
  """
  return [worker_binary_path(), f'--port={port}',
          f'--max_concurrent_computation_calls='
          f'{max_concurrent_computation_calls}']


def worker_environment() -> dict[str, str]:
  """Our environment with the worker's TensorFlow log level."""
  return {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': _WORKER_LOG_LEVEL}


# Run by a fresh interpreter (no threads) between our fork and the worker's
# exec: prctl(PR_SET_PDEATHSIG = 1, SIGKILL) survives execve, so the kernel
# kills the worker when the thread that started it ends. A `preexec_fn` would
# run that code in the child of a threaded process (TensorFlow's and gRPC's
# threads), which can deadlock or abort before exec (seen here: "Fatal Python
# error: Aborted" in the child under load).
_PARENT_DEATH_LAUNCHER = """
import ctypes, os, signal, sys
try:
  ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
except (OSError, AttributeError):
  pass  # No prctl (not Linux): only the atexit hook stops the worker.
if os.getppid() != int(sys.argv[1]):
  sys.exit(1)  # The parent died before prctl: the signal would never come.
os.execv(sys.argv[2], sys.argv[2:])
"""


def _with_parent_death_signal(command: Sequence[str]) -> list[str]:
  """`command`, started through a launcher that ties it to our life (Linux).

  Elsewhere the command itself: only the `atexit` hook stops the worker.
  """
  if not sys.platform.startswith('linux'):
    return list(command)
  return [sys.executable, '-I', '-c', _PARENT_DEATH_LAUNCHER,
          str(os.getpid()), *command]


class _Spawner:
  """Starts child processes from one daemon thread that never ends.

  A child's PR_SET_PDEATHSIG fires when the thread that forked it ends, so
  the worker must not be forked from TFF's event-loop thread or a test's
  thread pool; a daemon thread lives until the process itself exits (after
  our `atexit` hooks have stopped the worker gracefully).
  """

  def __init__(self):
    self._requests: queue.SimpleQueue = queue.SimpleQueue()
    self._thread: Optional[threading.Thread] = None
    self._lock = threading.Lock()

  def popen(self, command: Sequence[str], **kwargs: Any) -> subprocess.Popen:
    """`subprocess.Popen(command, **kwargs)`, tied to this process's life."""
    with self._lock:
      # A fork of this process (e.g. multiprocessing) has no such thread.
      if self._thread is None or not self._thread.is_alive():
        self._thread = threading.Thread(target=self._serve, daemon=True,
                                        name='tff-worker-spawner')
        self._thread.start()
    started = futures.Future()
    self._requests.put((started, command, kwargs))
    return started.result()

  def _serve(self) -> None:
    while True:
      started, command, kwargs = self._requests.get()
      try:
        started.set_result(subprocess.Popen(
            _with_parent_death_signal(command), **kwargs))
      except BaseException as e:  # pylint: disable=broad-except
        started.set_exception(e)  # Raised in the caller's thread.


_SPAWNER = _Spawner()


class LocalWorker:
  """One `worker_binary` child process serving on a loopback port."""

  def __init__(self, max_concurrent_computation_calls: int):
    self.port = portpicker.pick_unused_port()
    self.max_concurrent_computation_calls = max_concurrent_computation_calls
    self._process: Optional[subprocess.Popen] = _SPAWNER.popen(
        worker_command(self.port, max_concurrent_computation_calls),
        # Never let the worker inherit our stdout: a reader of our pipe would
        # wait on it after we exit. Its stderr carries real errors; keep it.
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        env=worker_environment(),
    )
    atexit.register(self.stop)
    channel = grpc.insecure_channel(f'localhost:{self.port}',
                                    _GRPC_CHANNEL_OPTIONS)
    self.stub = tff.framework.RemoteExecutorGrpcStub(channel)
    self._wait_until_ready()

  @property
  def pid(self) -> Optional[int]:
    """The worker's process id; None once stopped."""
    return None if self._process is None else self._process.pid

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
      process.wait(timeout=_WORKER_STOP_GRACE_SECONDS)
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
# What runs the computations, for summary.json; updated in place, so that a
# run's summary, which holds this dict, sees the devices used meanwhile.
_EXECUTION: dict[str, Any] = {}
# The in-process path's placement while it is the context, else None.
_INPROCESS_PLACEMENT: Optional[inprocess.Placement] = None


def _stop_local_worker() -> None:
  global _ACTIVE_WORKER
  if _ACTIVE_WORKER is not None:
    _ACTIVE_WORKER.stop()
    _ACTIVE_WORKER = None


def _record_execution(executor: str, devices: Any,
                      placement: Optional[inprocess.Placement] = None) -> None:
  global _INPROCESS_PLACEMENT
  _EXECUTION.clear()
  _EXECUTION.update(executor=executor, devices=devices)
  _INPROCESS_PLACEMENT = placement


def execution_summary() -> dict[str, Any]:
  """The executor in use and the devices that ran computations.

  The dict is live: the in-process path adds to `devices` (the devices
  TensorFlow placed results on, e.g.
  '/job:localhost/replica:0/task:0/device:CPU:0') while it runs; TFF's
  worker has TensorFlow's CPU kernels only.
  """
  return _EXECUTION


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
  _stop_local_worker()
  _ACTIVE_WORKER = _LazyWorker(max_concurrent_computation_calls)
  tff.framework.get_context_stack().set_default_context(
      _context_for_worker(_ACTIVE_WORKER))
  _record_execution('worker', ['worker_binary (CPU only)'])


def set_inprocess_execution_context(device: str = 'auto') -> None:
  """Runs computations in this process with TensorFlow (`inprocess`).

  No worker is started (a local one is stopped) and no port is opened.

  Args:
    device: 'auto' (every GPU TensorFlow sees, else the CPU), 'cpu' or 'gpu';
      clients are shared round-robin by the GPUs.

  Raises:
    errors.UserInputError: naming --device, for 'gpu' without a GPU.
  """
  placement = inprocess.Placement(inprocess.resolve_devices(device))
  _stop_local_worker()
  tff.framework.get_context_stack().set_default_context(
      inprocess.build_execution_context(placement))
  # The placement's own list, filled in while computations run.
  _record_execution('inprocess', placement.used, placement)


def inprocess_seconds() -> Optional[collections.Counter]:
  """Seconds spent in each federated intrinsic on the in-process path.

  Live while it runs: `federated_map` is client work (and small server
  maps), `federated_aggregate` the aggregation, `federated_apply` and
  `federated_eval_at_server` server work. None unless the in-process path
  is the context (TFF's worker shows no such breakdown).
  """
  if _INPROCESS_PLACEMENT is None:
    return None
  return _INPROCESS_PLACEMENT.seconds


EXECUTORS = ('worker', 'inprocess')


def set_execution_context(executor: str = 'worker', device: str = 'auto',
                          workers: Optional[Sequence[str]] = None,
                          max_concurrent_computation_calls: Optional[int] = None
                         ) -> None:
  """Installs the context that `--executor`, `--device`, `--workers` ask for.

  Args:
    executor: 'worker' (TFF's C++ worker_binary, CPU only) or 'inprocess'
      (TensorFlow in this process, `set_inprocess_execution_context`).
    device: 'auto', 'cpu' or 'gpu'; the worker runs on CPUs only.
    workers: `host:port` of remote workers (worker executor only).
    max_concurrent_computation_calls: the local worker's concurrency.

  Raises:
    errors.UserInputError: naming the flags, for --workers with
      --executor=inprocess, --device=gpu with the worker, or --device=gpu
      where TensorFlow sees no GPU.
  """
  if executor not in EXECUTORS:
    raise errors.UserInputError(
        f'--executor={executor!r} is not one of {", ".join(EXECUTORS)}.')
  if executor == 'inprocess':
    if workers:
      raise errors.UserInputError(
          '--workers runs on TFF workers; drop --executor=inprocess (or drop '
          '--workers to run in this process).')
    set_inprocess_execution_context(device)
    return
  if device == 'gpu':
    raise errors.UserInputError(
        '--device=gpu needs --executor=inprocess: TFF\'s worker_binary has '
        'only CPU kernels.')
  if workers:
    set_remote_execution_context(workers)
  else:
    set_local_execution_context(max_concurrent_computation_calls)


class Terminated(KeyboardInterrupt):
  """SIGTERM arrived; a `KeyboardInterrupt`, so the run stops as after Ctrl-C.

  Being no `Exception`, it passes the `except Exception` blocks on its way
  out (a checkpoint that cannot be read falls back to an older one, not a
  stop that arrives meanwhile).
  """


# Exit statuses of a shell for a process ended by these signals (128 + n).
_SIGINT_STATUS = 128 + signal.SIGINT
_SIGTERM_STATUS = 128 + signal.SIGTERM


def _raise_terminated(signum, frame) -> None:
  del signum, frame  # The handler's signature; the exception says it all.
  # A scheduler may repeat SIGTERM before its SIGKILL: let the first stop
  # finish (results closed, worker stopped) instead of interrupting it.
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
  raise Terminated()


def stop_on_sigterm() -> None:
  """Makes SIGTERM raise `Terminated` in the main thread, as Ctrl-C does.

  A run then stops between two Python steps: the checkpoints already saved
  stay (a save cut short leaves only a temporary directory that is never
  loaded, see `checkpointing`), and the `atexit` hook stops the worker. Call
  it from the main thread of a program, not from library code.
  """
  signal.signal(signal.SIGTERM, _raise_terminated)


def stop_report(interrupt: KeyboardInterrupt,
                resumable: bool) -> tuple[str, int]:
  """The line for stderr and the exit status of a run stopped by a signal.

  Args:
    interrupt: `Terminated` for SIGTERM, any other `KeyboardInterrupt` for
      Ctrl-C (SIGINT).
    resumable: whether the run keeps checkpoints to resume from.

  Returns:
    `(message, status)`, status 143 for SIGTERM and 130 for SIGINT, what a
    shell reports for a process that these signals ended.
  """
  if isinstance(interrupt, Terminated):
    name, status = 'SIGTERM', _SIGTERM_STATUS
  else:
    name, status = 'Ctrl-C (SIGINT)', _SIGINT_STATUS
  if resumable:
    return (f'stopped by {name}; the checkpoints are kept: resume with '
            '--resume.', status)
  return (f'stopped by {name}; nothing to resume (no --checkpoint_every).',
          status)


def _drop_default_context() -> None:
  """Replaces the default context by an idle one (it starts no worker).

  Run from `atexit`: the dropped context is freed now, so a TFF
  `local_cpp_executor_factory` context (TFF's import-time default) stops
  its worker from its `__del__` while `subprocess` still exists, instead of
  failing at interpreter shutdown and leaving the worker holding our stdout.
  Our own context's worker has its own `atexit` hook (`LocalWorker.stop`).
  """
  tff.framework.get_context_stack().set_default_context(
      _context_for_worker(_LazyWorker(1)))


# The only thing importing this module does; the context in use stays TFF's
# until a run or the user calls a `set_*_execution_context`.
atexit.register(_drop_default_context)


# How long a --workers address may take to answer before we give up on it.
WORKER_CONNECT_TIMEOUT_SECONDS = 10.0
_UNREACHABLE_CODES = (grpc.StatusCode.UNAVAILABLE,
                      grpc.StatusCode.DEADLINE_EXCEEDED)


class WorkerUnavailableError(RuntimeError):
  """A remote TFF worker stopped answering during a run."""


class UnsupportedComputationError(ValueError):
  """A computation that TFF's mergeable (multi-worker) context cannot run."""


def parse_worker_addresses(addresses: Sequence[str]) -> tuple[str, ...]:
  """Checks `host:port` strings (IPv6 hosts in brackets).

  Raises:
    errors.UserInputError: naming --workers, for an empty list, a malformed
      or repeated address.
  """
  parsed = []
  for address in addresses:
    host, sep, port = address.strip().rpartition(':')
    if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
      raise errors.UserInputError(
          f'--workers holds {address!r}; write host:port (e.g. '
          '127.0.0.1:8001,10.0.0.2:8001).')
    parsed.append(f'{host}:{int(port)}')
  if not parsed:
    raise errors.UserInputError('--workers is empty; write host:port,...')
  if len(set(parsed)) != len(parsed):
    raise errors.UserInputError(
        f'--workers names a worker twice ({",".join(parsed)}).')
  return tuple(parsed)


class _AddressedStub(tff.framework.RemoteExecutorStub):
  """TFF's gRPC stub that turns a lost worker into one error naming it.

  TFF's stub raises UNAVAILABLE as retryable, and the async context retries
  such calls without end, so a dead worker would hang the run.
  """

  def __init__(self, address: str, channel: grpc.Channel):
    self.address = address
    self._stub = tff.framework.RemoteExecutorGrpcStub(channel)

  def _call(self, method: str, request):
    try:
      return getattr(self._stub, method)(request)
    except grpc.RpcError as e:
      code = e.code() if isinstance(e, grpc.Call) else None
      if code in _UNREACHABLE_CODES and method.startswith('dispose'):
        return None  # A lost worker holds nothing left to free.
      if code in _UNREACHABLE_CODES:
        raise WorkerUnavailableError(
            f'TFF worker {self.address} stopped answering ({code.name}); '
            'restart it (python -m tff_imbalance.worker) and resume the run '
            'with --resume.') from None
      raise

  def get_executor(self, request):
    return self._call('get_executor', request)

  def create_value(self, request):
    return self._call('create_value', request)

  def create_struct(self, request):
    return self._call('create_struct', request)

  def create_call(self, request):
    return self._call('create_call', request)

  def create_selection(self, request):
    return self._call('create_selection', request)

  def compute(self, request):
    return self._call('compute', request)

  def dispose(self, request):
    return self._call('dispose', request)

  def dispose_executor(self, request):
    return self._call('dispose_executor', request)

  @property
  def is_ready(self) -> bool:
    return self._stub.is_ready


def connect_worker(address: str,
                   timeout_seconds: Optional[float] = None
                  ) -> tff.framework.RemoteExecutorStub:
  """A stub for the worker at `address`, once it answers.

  Args:
    address: `host:port`.
    timeout_seconds: how long to wait for it; default
      `WORKER_CONNECT_TIMEOUT_SECONDS`.

  Raises:
    errors.UserInputError: naming the address, if it does not answer within
      `timeout_seconds`.
  """
  if timeout_seconds is None:
    timeout_seconds = WORKER_CONNECT_TIMEOUT_SECONDS
  channel = grpc.insecure_channel(address, _GRPC_CHANNEL_OPTIONS)
  try:
    grpc.channel_ready_future(channel).result(timeout=timeout_seconds)
  except grpc.FutureTimeoutError:
    channel.close()
    port = address.rpartition(':')[2]
    raise errors.UserInputError(
        f'--workers: no TFF worker answers at {address} (waited '
        f'{timeout_seconds:g} s); start one there with `python -m '
        f'tff_imbalance.worker --port={port}`, or fix the address.') from None
  return _AddressedStub(address, channel)


def _remote_async_context(stub: tff.framework.RemoteExecutorStub):
  def stack_fn(cardinalities):
    cardinalities.setdefault(tff.CLIENTS, 0)
    executor = tff.framework.RemoteExecutor(stub)
    executor.set_cardinalities(cardinalities)
    return executor

  return tff.framework.AsyncExecutionContext(
      executor_fn=tff.framework.ResourceManagingExecutorFactory(
          executor_stack_fn=stack_fn),
      compiler_fn=tff.backends.native.desugar_and_transform_to_native,
      transform_args=tff.tensorflow.transform_args,
      transform_result=tff.tensorflow.transform_result,
  )


def _has_per_client_result(type_spec) -> bool:
  return tff.types.contains(
      type_spec, lambda t: isinstance(t, tff.FederatedType) and
      t.placement == tff.CLIENTS and not t.all_equal)


def _compile_for_workers(comp):
  """TFF's mergeable-form compiler, with its limits stated in our words."""
  if _has_per_client_result(comp.type_signature.result):
    raise UnsupportedComputationError(
        'this computation returns a value per client '
        f'({comp.type_signature.result}); with --workers TFF 0.87 returns '
        'per-client results in the order the workers finish, not in client '
        'order, so such computations run only without --workers.')
  try:
    return tff.backends.native.compile_to_mergeable_comp_form(comp)
  except ValueError as e:
    raise UnsupportedComputationError(
        'with --workers every computation may hold only one aggregation '
        '(CLIENTS -> SERVER) that others do not depend on; TFF\'s mergeable '
        f'compiler refused this one ({type(e).__name__}: '
        f'{str(e).splitlines()[0][:300]}). Run it without --workers.'
    ) from e


def set_remote_execution_context(addresses: Sequence[str]) -> None:
  """Makes workers at `addresses` (host:port) TFF's default context.

  Each computation is split by TFF's mergeable compiler: every worker trains
  a contiguous share of the cohort (`ceil(K / workers)` clients, in cohort
  order) and aggregates it, the driver's process merges the partial
  aggregates on one worker, and the rest of the round (server update) runs on
  the merged value. The local worker, if any, is stopped.

  Args:
    addresses: `host:port` of each running worker.

  Raises:
    errors.UserInputError: for a malformed address or a worker that does not
      answer (the message names it).
  """
  stubs = [connect_worker(address)
           for address in parse_worker_addresses(addresses)]
  _stop_local_worker()
  tff.framework.get_context_stack().set_default_context(
      tff.framework.MergeableCompExecutionContext(
          [_remote_async_context(stub) for stub in stubs],
          compiler_fn=_compile_for_workers,
          transform_result=tff.tensorflow.transform_result))
  _record_execution('workers', [f'worker_binary at {address} (CPU only)'
                                for address in addresses])
