"""Remote execution: two TFF workers on 127.0.0.1 give a local run's results.

The workers are `worker_binary` children on free ports, stopped when the module
ends; `faulthandler` ends the test process if anything here hangs.
"""

import faulthandler
import os
import time

import numpy as np
import portpicker
import pytest

from tff_imbalance import compat
from tff_imbalance import errors
from tff_imbalance import runner
from tff_imbalance import runtime
from tff_imbalance.data import arrays
from tff_imbalance.data import federated
from tff_imbalance.learning import registry
from tff_imbalance.learning import selection
from tff_imbalance.models import spec as spec_lib

tff = compat.tff

NUM_CLIENTS, COHORT, ROUNDS = 6, 4, 3
_SPEC = spec_lib.ModelSpec('mlp', (6, 6, 1), 4, seed=0)
# Everything in this module, workers included, must end within this time.
_MODULE_DEADLINE_SECONDS = 300


@pytest.fixture(scope='module')
def workers():
  faulthandler.dump_traceback_later(_MODULE_DEADLINE_SECONDS, exit=True)
  started = []
  try:
    for _ in range(2):
      started.append(runtime.LocalWorker(max_concurrent_computation_calls=1))
    yield started
  finally:
    for worker in started:
      worker.stop()
    runtime.set_local_execution_context()
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(autouse=True)
def local_context_after_each_test():
  yield
  runtime.set_local_execution_context()


def _addresses(workers):
  return [f'127.0.0.1:{worker.port}' for worker in workers]


def _cpu_seconds(pid: int) -> float:
  with open(f'/proc/{pid}/stat') as f:
    fields = f.read().rsplit(')', 1)[1].split()
  return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def _data():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 4, 240).astype(np.int64)
  x = (rng.random((240, 6, 6, 1)) * 0.3 + y[:, None, None, None] / 4).astype(
      np.float32)
  pool = arrays.LabeledArrays(x=x, y=y)
  parts = np.array_split(np.arange(240), NUM_CLIENTS)
  data = federated.build_federated_data(pool, parts, 4,
                                        validation_fraction=0.25, seed=0)
  test = arrays.LabeledArrays(x=x[::3], y=y[::3])
  return data, test, np.bincount(y, minlength=4)


def _process(algo):
  _, _, counts = _data()
  config = registry.AlgorithmConfig(client_lr=0.1, clients_per_round=COHORT)
  context = registry.TaskContext(num_classes=4, num_clients=NUM_CLIENTS,
                                 train_class_counts=counts)
  options = (registry.make_options('fedfocal', psi=0.5)
             if algo == 'fedfocal' else None)
  return registry.build_process(algo, _SPEC, config, context, options)


def _run(algo, process):
  """`ROUNDS` rounds of `algo` in the current context.

  Returns:
    The run summary, each round's cohort and the final model weights.
  """
  data, test, counts = _data()
  if registry.uses_validation(algo):
    selector = selection.PsiSelector(NUM_CLIENTS, COHORT, 0.5, 0)
  else:
    selector = selection.UniformSelector(NUM_CLIENTS, COHORT, 0)
  cohorts, weights = [], []
  select, evaluate = selector.select, runner.Evaluator(_SPEC, test, counts)

  def recording_select(round_num, measurements):
    cohorts.append(select(round_num, measurements).tolist())
    return cohorts[-1]

  def recording_evaluate(model_weights):
    weights[:] = [np.asarray(w) for w in model_weights.trainable]
    return evaluate(model_weights)

  selector.select = recording_select
  summary = runner.run(
      process, data, selector, recording_evaluate,
      runner.RunConfig(rounds=ROUNDS, local_epochs=1, batch_size=8,
                       eval_every=1, seed=0, quiet=True))
  return summary, cohorts, weights


def _numbers(history):
  return np.array([[np.nan if entry[key] is None else entry[key]
                    for key in runner.SCALAR_EVAL_KEYS] for entry in history],
                  dtype=float)


@pytest.mark.parametrize('algo', ['fedavg', 'fedfocal'])
def test_two_workers_give_the_local_results(workers, algo):
  process = _process(algo)
  runtime.set_local_execution_context(2)
  local, local_cohorts, local_weights = _run(algo, process)
  runtime.set_remote_execution_context(_addresses(workers))
  cpu_before = [_cpu_seconds(w._process.pid) for w in workers]  # pylint: disable=protected-access
  remote, remote_cohorts, remote_weights = _run(algo, process)
  cpu_after = [_cpu_seconds(w._process.pid) for w in workers]  # pylint: disable=protected-access

  # Same cohorts (psi selection follows the clients' validation losses).
  assert remote_cohorts == local_cohorts
  assert len(local['history']) == len(remote['history']) == ROUNDS
  # The workers sum their shares before the driver merges them: the same
  # numbers up to the order of float additions.
  np.testing.assert_allclose(_numbers(remote['history']),
                             _numbers(local['history']), atol=1e-6)
  assert len(remote_weights) == len(local_weights) > 0
  for remote_value, local_value in zip(remote_weights, local_weights):
    np.testing.assert_allclose(remote_value, local_value, atol=1e-6)
  # Both workers trained (cohort of 4: two clients each).
  assert all(after > before for before, after in zip(cpu_before, cpu_after))


def test_an_absent_worker_is_named_without_waiting_long(monkeypatch):
  monkeypatch.setattr(runtime, 'WORKER_CONNECT_TIMEOUT_SECONDS', 1.0)
  address = f'127.0.0.1:{portpicker.pick_unused_port()}'
  start = time.monotonic()
  with pytest.raises(errors.UserInputError, match=f'no TFF worker answers at '
                     f'{address}.*--port={address.rpartition(":")[2]}'):
    runtime.set_remote_execution_context([address])
  assert time.monotonic() - start < 10


def test_a_worker_lost_mid_run_is_named_not_retried_forever():
  worker = runtime.LocalWorker(max_concurrent_computation_calls=1)
  address = f'127.0.0.1:{worker.port}'
  try:
    runtime.set_remote_execution_context([address])
    add_one = compat.tf_computation(lambda x: x + 1, np.int32)
    assert add_one(1) == 2
    worker.stop()
    start = time.monotonic()
    with pytest.raises(runtime.WorkerUnavailableError, match=address):
      add_one(2)
    assert time.monotonic() - start < 30
  finally:
    worker.stop()


@pytest.mark.parametrize('addresses, message', [
    (['localhost'], 'write host:port'),
    (['localhost:0'], 'write host:port'),
    (['localhost:80x'], 'write host:port'),
    (['a:1', 'a:1'], 'twice'),
    ([], 'empty'),
])
def test_bad_worker_addresses_are_refused(addresses, message):
  with pytest.raises(errors.UserInputError, match=f'--workers.*{message}'):
    runtime.parse_worker_addresses(addresses)


def test_computations_the_workers_cannot_split_are_refused_clearly(workers):
  runtime.set_remote_execution_context(_addresses(workers))
  clients_int = tff.FederatedType(np.int32, tff.CLIENTS)

  @compat.federated_computation(clients_int)
  def sum_then_sum_again(values):
    total = tff.federated_sum(values)
    return tff.federated_sum(
        tff.federated_map(compat.tf_computation(lambda a, b: a + b),
                          (values, tff.federated_broadcast(total))))

  with pytest.raises(runtime.UnsupportedComputationError,
                     match='only one aggregation'):
    sum_then_sum_again([1, 2, 3, 4])

  @compat.federated_computation(clients_int)
  def per_client(values):
    return tff.federated_map(compat.tf_computation(lambda a: a + 1), values)

  with pytest.raises(runtime.UnsupportedComputationError,
                     match='per client'):
    per_client([1, 2, 3, 4])

  @compat.federated_computation(clients_int)
  def one_sum(values):
    return tff.federated_sum(values)

  assert one_sum([1, 2, 3, 4]) == 10


def _next_rounds(process, algo, rounds=2):
  """Weights and train loss after `rounds` rounds on a fixed cohort."""
  data, _, _ = _data()
  state = process.initialize()
  for round_num in range(1, rounds + 1):
    inputs = data.round_inputs(
        [0, 2, 3, 5], round_num=round_num, local_epochs=1, batch_size=8,
        seed=0, with_validation=registry.uses_validation(algo),
        with_client_index=runner.wants_client_index(process),
        with_population=runner.wants_population(process))
    output = process.next(state, inputs)
    state = output.state
  weights = [np.asarray(w) for w in process.get_model_weights(state).trainable]
  return weights, float(output.metrics['client_work']['train']['loss'])


# The methods whose clients read their data more than once per round
# (statistics or a balanced set, then training): the ones whose local runs did
# not repeat while a TF shuffle ordered client data. CI runs them on the
# workers; TFF_IMBALANCE_REMOTE_ALL=1 runs every algorithm.
_MULTI_PASS = frozenset(
    {'balancefl', 'redgrape', 'creff', 'climb', 'balanced_softmax'})


@pytest.mark.parametrize('algo', [
    algo if algo in _MULTI_PASS else pytest.param(
        algo, marks=pytest.mark.skipif(
            not os.environ.get('TFF_IMBALANCE_REMOTE_ALL'),
            reason='about 10 s per algorithm; TFF_IMBALANCE_REMOTE_ALL=1 '
            'runs it'))
    for algo in [*registry.algorithm_names(), 'monitor']])
def test_every_registered_algorithm_runs_on_two_workers(workers, algo):
  """Two local runs agree bit for bit, and the remote run with them."""
  data, _, counts = _data()
  x, y = data.pool.x, data.pool.y
  config = registry.AlgorithmConfig(
      client_lr=0.1, clients_per_round=COHORT, monitor=algo == 'monitor')
  context = registry.TaskContext(
      num_classes=4, num_clients=NUM_CLIENTS, train_class_counts=counts,
      aux_data=arrays.LabeledArrays(x=x[:32], y=y[:32]),
      client_sizes=np.array([len(part)
                             for part in data.client_train_partition()]))
  name = 'fedavg' if algo == 'monitor' else algo
  options = (registry.make_options('creff', creff_match_steps=5,
                                   creff_retrain_epochs=5)
             if name == 'creff' else None)
  process = registry.build_process(name, _SPEC, config, context, options)
  runtime.set_local_execution_context(2)
  initial = process.get_model_weights(process.initialize()).trainable
  local = _next_rounds(process, name)
  local_again = _next_rounds(process, name)
  runtime.set_remote_execution_context(_addresses(workers))
  remote = _next_rounds(process, name)
  assert np.isfinite(remote[1])
  for value, value_again in zip(local[0], local_again[0]):
    np.testing.assert_array_equal(value, value_again)
  # The workers sum the cohort in another order (two partial sums, merged),
  # and two rounds of training amplify that rounding: BalanceFL's last kernel
  # differed by 1.0e-6 on one CPU and 3.7e-5 on CI's (2026-12-01), 0.3% of
  # its 0.012 update. So the bound scales with each variable's update: a
  # round with client 5 of the cohort replaced by client 3 moved every
  # BalanceFL variable by 31-39% of its update (2026-12-02), far over 2%.
  for remote_value, local_value, start in zip(remote[0], local[0], initial):
    update = np.abs(local_value - np.asarray(start)).max()
    assert update > 0, 'two rounds left a variable unchanged: nothing compared'
    np.testing.assert_allclose(remote_value, local_value,
                               atol=max(1e-6, 0.02 * update))
  # The round's mean train loss sees the same rounding, amplified alike.
  np.testing.assert_allclose(remote[1], local[1], rtol=1e-3)
