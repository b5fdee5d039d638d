"""TFF computations executed in this Python process with TensorFlow.

TFF 0.87's only runtime is its C++ `worker_binary`, which holds TensorFlow's
CPU kernels only (no GPU device). This module runs the same computations
without it: each computation is compiled exactly as for the worker
(`tff.backends.native.desugar_and_transform_to_native`: intrinsics replaced
by their bodies, call-dominant form, grappler applied to every TensorFlow
graph), and the resulting building blocks are interpreted here:

  * Lambda, Block, Call, Reference, Struct, Selection: plain Python
    (closures, environments, `structure.Struct`);
  * CompiledComputation: its serialized graph imported once with
    `tf.graph_util.import_graph_def` inside `tf.compat.v1.wrap_function`,
    then called eagerly; datasets cross as variant tensors
    (`tf.data.experimental.to_variant` / `from_variant`);
  * the federated intrinsics that the compiled `initialize` and `next` of
    every registered algorithm hold (`INTRINSICS`, listed by compiling them
    all): client work runs once per client, `concurrent_clients` at a time
    (threads, each call on its own import of the graph), each client on its
    device, results kept in client order; `federated_aggregate` folds
    `accumulate` over the clients in order from `zero` and applies `report`
    (TFF's C++ federating executor does the same and never calls `merge`),
    so the arithmetic is the worker's and on CPU the weights agree with it
    to float rounding (tests/test_inprocess.py: within 1e-5).

Custom aggregation factories, measurements, the composition monitor and
CLIMB's per-client state need nothing extra: they compile to the same
intrinsics. Any other intrinsic stops with `UnsupportedIntrinsicError`
naming it. No port is opened.

Devices: `Placement` puts each client's work on one device of the chosen
kind, round-robin over the GPUs when there are several, and server work on
the first; it records the devices TensorFlow actually placed results on.
"""

import collections
from concurrent import futures
import itertools
import os
from collections.abc import Callable, Sequence
import threading
import time
from typing import Any, Optional

import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.common_libs import structure
from tensorflow_federated.python.core.impl.compiler import building_blocks
from tensorflow_federated.python.core.impl.executors import executor_base
from tensorflow_federated.python.core.impl.executors import executor_value_base
from tensorflow_federated.python.core.impl.types import type_conversions
from tensorflow_federated.python.core.impl.utils import tensorflow_utils
from tensorflow_federated.python.tensorflow_libs import serialization_utils

from tff_imbalance import errors

DEVICE_CHOICES = ('auto', 'cpu', 'gpu')
# Numbers the imported graphs, whose variables must not share resources.
_GRAPH_COUNTER = itertools.count()


class UnsupportedIntrinsicError(NotImplementedError):
  """A computation holds an intrinsic the in-process path does not run."""


class UnsupportedComputationError(NotImplementedError):
  """A compiled computation the in-process path cannot execute."""


# ---------------------------------------------------------------------------
# Devices.


def visible_gpus() -> list[tf.config.PhysicalDevice]:
  """The GPUs TensorFlow sees (none without CUDA libraries and a GPU)."""
  return tf.config.list_physical_devices('GPU')


def _enable_memory_growth(gpus: Sequence[tf.config.PhysicalDevice]) -> None:
  # Without growth TF reserves nearly all GPU memory at the first op, which
  # would starve anything else sharing the GPU; this must precede that op.
  for gpu in gpus:
    try:
      tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:
      pass  # The GPU is already initialized; its setting stays.


def resolve_devices(device: str) -> list[str]:
  """TensorFlow device names for `--device`.

  Args:
    device: 'auto' (every visible GPU, else the CPU), 'cpu' or 'gpu'.

  Returns:
    Logical device names, e.g. ['/device:GPU:0', '/device:GPU:1'].

  Raises:
    errors.UserInputError: naming --device, for an unknown value or for
      'gpu' where TensorFlow sees none.
  """
  if device not in DEVICE_CHOICES:
    raise errors.UserInputError(
        f'--device={device!r} is not one of {", ".join(DEVICE_CHOICES)}.')
  gpus = [] if device == 'cpu' else visible_gpus()
  if device == 'gpu' and not gpus:
    raise errors.UserInputError(
        '--device=gpu: TensorFlow sees no GPU on this machine (needs an '
        'NVIDIA driver and `pip install -r requirements-gpu.txt`); use '
        '--device=auto or --device=cpu.')
  if not gpus:
    return ['/device:CPU:0']
  _enable_memory_growth(gpus)
  return [f'/device:GPU:{i}' for i in range(len(gpus))]


class Placement:
  """Which device runs which client, and which devices results landed on.

  Attributes:
    devices: the logical devices work is placed on.
    concurrent_clients: clients whose work runs at once (threads); default
      the CPU cores on CPU, the number of GPUs on GPUs.
    seconds: wall seconds spent in each federated intrinsic (by URI), summed
      over every computation run so far: a profile of client work
      (`federated_map`), aggregation and server work.
    used: the devices of the tensors that computations returned (TF's
      placement), sorted; one list, filled in place while computations run.
  """

  def __init__(self, devices: Sequence[str],
               concurrent_clients: Optional[int] = None):
    self.devices = tuple(devices)
    self.used: list[str] = []
    self._lock = threading.Lock()
    if concurrent_clients is None:
      # On CPU as many clients at once as cores (the worker's default); on
      # GPUs one per GPU.
      concurrent_clients = (len(self.devices) if any(
          'GPU' in d for d in self.devices) else (os.cpu_count() or 1))
    if concurrent_clients < 1:
      raise errors.UserInputError(
          f'concurrent clients must be >= 1 (got {concurrent_clients}).')
    self.concurrent_clients = concurrent_clients
    self.seconds: collections.Counter = collections.Counter()

  def client_device(self, client_index: int) -> str:
    # Round-robin: with several GPUs each holds an equal share of the cohort.
    return self.devices[client_index % len(self.devices)]

  @property
  def server_device(self) -> str:
    return self.devices[0]

  def record(self, value: Any) -> None:
    """Notes the device of the first tensor in `value`."""
    for leaf in _leaves(value):
      if isinstance(leaf, tf.Tensor):
        with self._lock:
          if leaf.device not in self.used:
            self.used.append(leaf.device)
            self.used.sort()
        return


def _leaves(value: Any):
  if isinstance(value, structure.Struct):
    for _, element in structure.iter_elements(value):
      yield from _leaves(element)
  elif isinstance(value, ClientValues):
    for element in value.values:
      yield from _leaves(element)
  else:
    yield value


# ---------------------------------------------------------------------------
# Values at run time: tensors are eager `tf.Tensor`s, sequences
# `tf.data.Dataset`s, structures `structure.Struct`s, functions Python
# callables of one argument (or none), SERVER-placed values the value itself
# and CLIENTS-placed values a `ClientValues`.


class ClientValues:
  """One value per client (all the same object for an all-equal value)."""

  def __init__(self, values: Sequence[Any]):
    self.values = list(values)

  def __repr__(self):
    return f'ClientValues({self.values!r})'


def _per_client(value: Any, num_clients: int) -> list[Any]:
  """Client `i`'s part of a CLIENTS value or of a structure of them."""
  if isinstance(value, ClientValues):
    return value.values
  if isinstance(value, structure.Struct):
    elements = structure.to_elements(value)
    columns = [_per_client(v, num_clients) for _, v in elements]
    return [structure.Struct((name, column[i]) for (name, _), column
                             in zip(elements, columns))
            for i in range(num_clients)]
  raise UnsupportedComputationError(
      f'federated_zip_at_clients got a {type(value).__name__}, not values '
      'placed at CLIENTS.')


# ---------------------------------------------------------------------------
# TensorFlow computations.


def _with_own_resources(graph_def: tf.compat.v1.GraphDef,
                        suffix: str) -> tf.compat.v1.GraphDef:
  """`graph_def` whose variables' shared names end in `suffix`.

  Variables live in the device's resource manager under their shared name;
  the worker gives each computation its own session, here one suffix per
  imported graph keeps e.g. `initialize`'s and `next`'s "dense/kernel"
  apart.
  """
  result = tf.compat.v1.GraphDef()
  result.CopyFrom(graph_def)
  for node in result.node:
    shared_name = node.attr.get('shared_name')
    if shared_name is not None and shared_name.s:
      shared_name.s += suffix.encode()
  return result


def _flat_specs(type_spec: Optional[tff.Type]) -> list[tf.TensorSpec]:
  if type_spec is None:
    return []
  specs = []
  for leaf in structure.flatten(type_spec):
    if isinstance(leaf, tff.SequenceType):
      specs.append(tf.TensorSpec([], tf.variant))
    else:
      specs.append(tf.TensorSpec(leaf.shape, leaf.dtype))
  return specs


def _to_graph_input(value: Any) -> tf.Tensor:
  if isinstance(value, tf.data.Dataset):
    return tf.data.experimental.to_variant(value)
  return value


def _from_graph_output(tensor: tf.Tensor, type_spec: tff.Type) -> Any:
  if isinstance(type_spec, tff.SequenceType):
    return tf.data.experimental.from_variant(
        tensor, type_conversions.type_to_tf_structure(type_spec.element))
  return tensor


class _GraphReplica:
  """One import of a computation's graph, with variables of its own."""

  def __init__(self, graph_def, parameter_specs, parameter_names,
               result_names, init_op):
    def import_graph(*flat_arguments):
      return tf.graph_util.import_graph_def(
          graph_def, input_map=dict(zip(parameter_names, flat_arguments)),
          return_elements=result_names, name='')

    graph = tf.compat.v1.wrap_function(import_graph, parameter_specs)
    # The worker runs `initialize_op` (variable initializers), then the
    # results. Control edges from it cannot reach into the while-loop frames
    # that grappler left in the graph, so it runs as its own call first,
    # on the same resources.
    self.results = graph.prune(graph.inputs, graph.outputs)
    self.initialize = (
        graph.prune(graph.inputs,
                    graph.graph.get_operation_by_name(init_op.split(':')[0]))
        if init_op else None)


class TensorFlowFunction:
  """A `CompiledComputation`'s graph as an eager callable.

  Each call runs the graph with TensorFlow's eager function runtime on the
  device scope current at the call. Calls may overlap (the clients of a
  round run on several threads): a call takes an import of the graph that
  no other call is using, importing another only when all are busy, so
  concurrent calls never share variables and at most one import per
  concurrent client exists. Every call runs the graph's initializer first,
  so which import a call gets does not change its result.
  """

  def __init__(self, comp: building_blocks.CompiledComputation):
    tf_proto = comp.proto.tensorflow
    if tf_proto.session_token_tensor_name:
      raise UnsupportedComputationError(
          'a TensorFlow computation reads a session token, which only the '
          'worker provides.')
    self._parameter_type = comp.type_signature.parameter
    self._result_type = comp.type_signature.result
    self._result_leaf_types = structure.flatten(self._result_type)
    self._parameter_names = (
        tensorflow_utils.extract_tensor_names_from_binding(tf_proto.parameter)
        if self._parameter_type is not None else [])
    self._result_names = tensorflow_utils.extract_tensor_names_from_binding(
        tf_proto.result)
    self._graph_def = serialization_utils.unpack_graph_def(
        tf_proto.graph_def)
    self._init_op = tf_proto.initialize_op
    self._free: list[_GraphReplica] = []
    self._lock = threading.Lock()

  def _acquire(self) -> _GraphReplica:
    with self._lock:
      if self._free:
        return self._free.pop()
      # Imported under the lock: graph construction is not made to race.
      return _GraphReplica(
          _with_own_resources(self._graph_def,
                              f'_inprocess_{next(_GRAPH_COUNTER)}'),
          _flat_specs(self._parameter_type), self._parameter_names,
          self._result_names, self._init_op)

  def __call__(self, argument: Any = None) -> Any:
    flat_arguments = ([] if self._parameter_type is None else
                      [_to_graph_input(v) for v in structure.flatten(argument)])
    replica = self._acquire()
    try:
      if replica.initialize is not None:
        replica.initialize(*flat_arguments)
      flat_results = replica.results(*flat_arguments)
    finally:
      with self._lock:
        self._free.append(replica)
    results = [_from_graph_output(t, leaf_type) for t, leaf_type
               in zip(flat_results, self._result_leaf_types)]
    if isinstance(self._result_type, tff.StructType):
      return structure.pack_sequence_as(self._result_type, results)
    return results[0]


# ---------------------------------------------------------------------------
# Intrinsics: each takes (interpreter, argument value) and returns a value.


def _value_at_server(interp, value):
  del interp  # Server values are plain values.
  return value


def _eval_at_server(interp, fn):
  with tf.device(interp.placement.server_device):
    return fn()


def _apply_at_server(interp, argument):
  fn, value = _pair(argument)
  with tf.device(interp.placement.server_device):
    result = fn(value)
  interp.placement.record(result)
  return result


def _broadcast(interp, value):
  return ClientValues([value] * interp.num_clients)


def _map(interp, argument):
  fn, value = _pair(argument)
  if not isinstance(value, ClientValues):  # federated_map at SERVER.
    return _apply_at_server(interp, argument)
  def client_work(index_and_value):
    index, client_value = index_and_value
    with tf.device(interp.placement.client_device(index)):
      return fn(client_value)

  # Clients run `concurrent_clients` at a time, as the worker runs
  # `max_concurrent_computation_calls`; results keep client order, so the
  # aggregation that follows folds them in the same order either way.
  items = list(enumerate(value.values))
  if interp.placement.concurrent_clients > 1 and len(items) > 1:
    with futures.ThreadPoolExecutor(
        max_workers=interp.placement.concurrent_clients) as pool:
      results = list(pool.map(client_work, items))
  else:
    results = [client_work(item) for item in items]
  interp.placement.record(results[0] if results else None)
  return ClientValues(results)


def _zip_at_clients(interp, value):
  return ClientValues(_per_client(value, interp.num_clients))


def _zip_at_server(interp, value):
  del interp  # A structure of server values is a server value.
  return value


def _aggregate(interp, argument):
  value, zero, accumulate, merge, report = [
      v for _, v in structure.iter_elements(argument)]
  del merge  # One accumulator, as in TFF's C++ federating executor.
  accumulator = zero
  for index, client_value in enumerate(value.values):
    with tf.device(interp.placement.client_device(index)):
      accumulator = accumulate(structure.Struct.unnamed(accumulator,
                                                        client_value))
  with tf.device(interp.placement.server_device):
    return report(accumulator)


def _pair(argument):
  first, second = [v for _, v in structure.iter_elements(argument)]
  return first, second


# The intrinsics in the compiled `initialize` and `next` of every registered
# algorithm (fedavg ... creff, with and without the monitor), as listed by
# compiling them with `desugar_and_transform_to_native`.
INTRINSICS: dict[str, Callable[[Any, Any], Any]] = {
    'federated_value_at_server': _value_at_server,
    'federated_eval_at_server': _eval_at_server,
    'federated_apply': _apply_at_server,
    'federated_broadcast': _broadcast,
    'federated_map': _map,
    'federated_map_all_equal': _map,
    'federated_zip_at_clients': _zip_at_clients,
    'federated_zip_at_server': _zip_at_server,
    'federated_aggregate': _aggregate,
}


# ---------------------------------------------------------------------------
# The interpreter of compiled building blocks.


class Interpreter:
  """Evaluates one compiled computation's building blocks.

  Attributes:
    num_clients: the cardinality of CLIENTS for this invocation.
    placement: where client and server work runs.
  """

  def __init__(self, num_clients: int, placement: Placement,
               functions: dict[int, TensorFlowFunction]):
    self.num_clients = num_clients
    self.placement = placement
    self._functions = functions  # Shared across invocations: imported once.

  def evaluate(self, comp: building_blocks.ComputationBuildingBlock,
               env: dict[str, Any]) -> Any:
    """The value of `comp` with the references in `env`."""
    evaluate = _EVALUATORS.get(type(comp))
    if evaluate is None:
      raise UnsupportedComputationError(
          f'the in-process path cannot run a {type(comp).__name__} building '
          'block.')
    return evaluate(self, comp, env)

  def tensorflow_function(self, comp: building_blocks.CompiledComputation):
    # Keyed by the object: the compiled program (and its blocks) is cached
    # by TFF's compiler pipeline, so each graph is imported once.
    function = self._functions.get(id(comp))
    if function is None:
      function = TensorFlowFunction(comp)
      self._functions[id(comp)] = function
    return function


def _evaluate_lambda(interp, comp, env):
  def fn(argument=None):
    return interp.evaluate(comp.result,
                           {**env, comp.parameter_name: argument}
                           if comp.parameter_name else env)

  return fn


def _evaluate_block(interp, comp, env):
  env = dict(env)
  for name, local in comp.locals:
    env[name] = interp.evaluate(local, env)
  return interp.evaluate(comp.result, env)


def _evaluate_call(interp, comp, env):
  fn = interp.evaluate(comp.function, env)
  if comp.argument is None:
    return fn()
  return fn(interp.evaluate(comp.argument, env))


def _evaluate_reference(interp, comp, env):
  del interp  # Only the environment is read.
  return env[comp.name]


def _evaluate_struct(interp, comp, env):
  return structure.Struct(
      (name, interp.evaluate(element, env))
      for name, element in structure.iter_elements(comp))


def _evaluate_selection(interp, comp, env):
  source = interp.evaluate(comp.source, env)
  if comp.name is not None:
    return getattr(source, comp.name)
  return source[comp.index]


def _evaluate_intrinsic(interp, comp, env):
  del env  # Intrinsics are closed.
  implementation = INTRINSICS.get(comp.uri)
  if implementation is None:
    raise UnsupportedIntrinsicError(
        f'the in-process path does not implement the intrinsic {comp.uri!r} '
        f'(it runs {", ".join(sorted(INTRINSICS))}); use --executor=worker.')
  seconds = interp.placement.seconds

  def timed(argument=None):
    # Wall time per intrinsic (client work = federated_map at clients,
    # aggregation, server work), summed: where a round's time goes.
    start = time.perf_counter()
    try:
      return implementation(interp, argument)
    finally:
      seconds[comp.uri] += time.perf_counter() - start

  return timed


def _evaluate_compiled(interp, comp, env):
  del env  # Compiled computations are closed.
  return interp.tensorflow_function(comp)


_EVALUATORS = {
    building_blocks.Lambda: _evaluate_lambda,
    building_blocks.Block: _evaluate_block,
    building_blocks.Call: _evaluate_call,
    building_blocks.Reference: _evaluate_reference,
    building_blocks.Struct: _evaluate_struct,
    building_blocks.Selection: _evaluate_selection,
    building_blocks.Intrinsic: _evaluate_intrinsic,
    building_blocks.CompiledComputation: _evaluate_compiled,
}


# ---------------------------------------------------------------------------
# Values between TFF's execution context and the interpreter.


def _to_runtime(value: Any, type_spec: tff.Type, num_clients: int) -> Any:
  """A Python argument of `type_spec` as the interpreter's value."""
  if isinstance(type_spec, tff.FederatedType):
    if type_spec.placement != tff.CLIENTS:
      return _to_runtime(value, type_spec.member, num_clients)
    if type_spec.all_equal:
      return ClientValues(
          [_to_runtime(value, type_spec.member, num_clients)] * num_clients)
    return ClientValues([_to_runtime(v, type_spec.member, num_clients)
                         for v in value])
  if isinstance(type_spec, tff.StructType):
    if not isinstance(value, structure.Struct):
      value = structure.from_container(value)
    return structure.Struct(
        (name, _to_runtime(v, t, num_clients)) for (name, v), (_, t) in zip(
            structure.iter_elements(value), structure.iter_elements(type_spec)))
  if isinstance(type_spec, tff.SequenceType):
    if not isinstance(value, tf.data.Dataset):
      raise UnsupportedComputationError(
          f'the in-process path takes sequences as tf.data.Dataset, not '
          f'{type(value).__name__}.')
    return value
  if isinstance(type_spec, tff.TensorType):
    return tf.constant(value, dtype=tf.as_dtype(type_spec.dtype))
  raise UnsupportedComputationError(
      f'the in-process path cannot take an argument of type {type_spec}.')


def _to_python(value: Any, type_spec: tff.Type) -> Any:
  """An interpreter value as the worker path returns it (numpy, lists)."""
  if isinstance(type_spec, tff.FederatedType):
    if isinstance(value, ClientValues):
      if type_spec.all_equal:
        return _to_python(value.values[0], type_spec.member)
      return [_to_python(v, type_spec.member) for v in value.values]
    return _to_python(value, type_spec.member)
  if isinstance(type_spec, tff.StructType):
    return structure.Struct(
        (name, _to_python(v, t)) for (name, v), (_, t) in zip(
            structure.iter_elements(value), structure.iter_elements(type_spec)))
  if isinstance(value, tf.Tensor):
    return value.numpy()
  return value


class _Program:
  """A computation compiled for the interpreter (what the compiler returns)."""

  def __init__(self, comp: tff.Computation):
    native = tff.backends.native.desugar_and_transform_to_native(comp)
    self.building_block = native.to_building_block()
    self.type_signature = native.type_signature
    self.functions: dict[int, TensorFlowFunction] = {}


def compile_computation(comp: tff.Computation) -> _Program:
  """TFF's native compilation (as for the worker), ready to interpret."""
  return _Program(comp)


class _Value(executor_value_base.ExecutorValue):
  """An interpreter value handed to TFF's execution context."""

  def __init__(self, value: Any, type_spec: tff.Type):
    self._value = value
    self._type_signature = type_spec

  @property
  def type_signature(self) -> tff.Type:
    return self._type_signature

  @property
  def reference(self):
    raise NotImplementedError('In-process values have no reference.')

  @property
  def value(self) -> Any:
    return self._value

  async def compute(self) -> Any:
    return _to_python(self._value, self._type_signature)


class InProcessExecutor(executor_base.Executor):
  """TFF's executor interface over the interpreter, for one cardinality."""

  def __init__(self, num_clients: int, placement: Placement):
    self._num_clients = num_clients
    self._placement = placement

  def close(self) -> None:
    pass  # Nothing held beyond Python objects.

  async def create_value(self, value, type_spec=None) -> _Value:
    if isinstance(value, _Program):
      interpreter = Interpreter(self._num_clients, self._placement,
                                value.functions)
      return _Value(interpreter.evaluate(value.building_block, {}),
                    value.type_signature)
    return _Value(_to_runtime(value, type_spec, self._num_clients), type_spec)

  async def create_call(self, comp: _Value, arg: Optional[_Value] = None):
    result_type = comp.type_signature.result
    if arg is None:
      return _Value(comp.value(), result_type)
    return _Value(comp.value(arg.value), result_type)

  async def create_struct(self, elements) -> _Value:
    if not isinstance(elements, structure.Struct):
      elements = structure.from_container(elements)
    elements = structure.to_elements(elements)
    return _Value(
        structure.Struct((name, v.value) for name, v in elements),
        tff.StructType([(name, v.type_signature) for name, v in elements]))

  async def create_selection(self, source: _Value, index: int) -> _Value:
    return _Value(source.value[index], source.type_signature[index])


def build_execution_context(placement: Placement) -> tff.framework.SyncContext:
  """A TFF context that runs computations in process on `placement`."""

  def executor_stack(cardinalities):
    return InProcessExecutor(cardinalities.get(tff.CLIENTS, 0), placement)

  return tff.framework.SyncExecutionContext(
      executor_fn=tff.framework.ResourceManagingExecutorFactory(
          executor_stack_fn=executor_stack),
      compiler_fn=compile_computation,
      transform_args=tff.tensorflow.transform_args,
      transform_result=tff.tensorflow.transform_result,
  )


def intrinsics_in(comp: tff.Computation) -> collections.Counter:
  """The intrinsic URIs in `comp` as compiled for execution, with counts."""
  found = collections.Counter()

  def visit(block):
    if isinstance(block, building_blocks.Intrinsic):
      found[block.uri] += 1
    for child in block.children():
      visit(child)

  visit(compile_computation(comp).building_block)
  return found
