"""The in-process execution path: same weights as TFF's worker, resumable.

Each algorithm of issue 19 runs 3 rounds of `runner.run` on a tiny MLP and
tiny self-made data, once on TFF's C++ worker and once in process, and the
weights must agree within 1e-5 (on CPU they differ by a few float32 ulps:
the worker's kernels are the same ops, but not bit for bit the same
arithmetic; tests/test_determinism.py keeps each path bit-for-bit repeatable).
"""

import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_imbalance import errors
from tff_imbalance import inprocess
from tff_imbalance import runner
from tff_imbalance import runtime
from tff_imbalance.data import arrays
from tff_imbalance.data import federated
from tff_imbalance.learning import registry
from tff_imbalance.models import spec as spec_lib

NUM_CLIENTS, COHORT, NUM_CLASSES, ROUNDS = 4, 3, 4, 3
SPEC = spec_lib.ModelSpec('mlp', (6, 6, 1), NUM_CLASSES, seed=0)
CPU = '/job:localhost/replica:0/task:0/device:CPU:0'


@pytest.fixture(autouse=True)
def _worker_afterwards():
  yield
  runtime.set_local_execution_context()  # Other test modules expect it.


def _data():
  rng = np.random.default_rng(0)
  y = np.minimum(rng.geometric(0.45, 160) - 1, NUM_CLASSES - 1).astype(
      np.int64)
  x = (rng.random((160, 6, 6, 1)) * 0.3 + y[:, None, None, None] / 4).astype(
      np.float32)
  parts = np.split(rng.permutation(160), [30, 70, 110])
  data = federated.build_federated_data(arrays.LabeledArrays(x=x, y=y), parts,
                                        NUM_CLASSES, validation_fraction=0.2,
                                        seed=0)
  aux = arrays.LabeledArrays(x=x[:24], y=np.arange(24) % NUM_CLASSES)
  return data, aux


@pytest.fixture(scope='module')
def task():
  data, aux = _data()
  config = registry.AlgorithmConfig(client_lr=0.1, clients_per_round=COHORT,
                                    local_epochs=2, batch_size=8)
  context = registry.TaskContext(
      num_classes=NUM_CLASSES, num_clients=NUM_CLIENTS,
      train_class_counts=np.bincount(data.train_labels(),
                                     minlength=NUM_CLASSES), aux_data=aux,
      client_sizes=np.array([len(part)
                             for part in data.client_train_partition()]))
  return dict(data=data, config=config, context=context)


def _weights_after_rounds(algo, process, task, output_dir=None,
                          rounds=ROUNDS, **config):
  weights = []
  # The algorithm's own selector: fedfocal's psi selection also shapes its
  # client inputs.
  selector = registry.build_selector(algo, task['config'], task['data'],
                                     COHORT, seed=0, model_spec=SPEC)

  def evaluate(model_weights):
    weights[:] = [np.asarray(w) for w in model_weights.trainable]
    return {}

  runner.run(process, task['data'], selector, evaluate,
             runner.RunConfig(rounds=rounds, local_epochs=2, batch_size=8,
                              eval_every=1, seed=0, quiet=True,
                              output_dir=output_dir, **config))
  return weights


# ratio runs the composition monitor; climb keeps per-client state; virtual
# chains K client steps in one round.
@pytest.mark.parametrize('algo', ['fedavg', 'fedfocal', 'ratio', 'redgrape',
                                  'climb', 'virtual'])
def test_in_process_weights_match_the_worker(task, algo):
  # VIRTUAL's default natural step is for 100 clients (w_k ~ 0.01); on four
  # it diverges, and chaos would amplify the runtimes' last-bit differences.
  options = (registry.make_options('virtual', virtual_natural_lr=1e7)
             if algo == 'virtual' else None)
  process = registry.build_process(algo, SPEC, task['config'], task['context'],
                                   options)
  runtime.set_execution_context('worker')
  on_worker = _weights_after_rounds(algo, process, task)
  runtime.set_execution_context('inprocess', 'cpu')
  in_process = _weights_after_rounds(algo, process, task)
  assert len(on_worker) == len(in_process) > 0
  for a, b in zip(on_worker, in_process):
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)
  # Trained, not merely initialized alike: the first round moved the weights.
  initial = process.get_model_weights(process.initialize()).trainable
  assert not np.allclose(np.asarray(initial[0]), in_process[0])
  assert runtime.execution_summary() == dict(executor='inprocess',
                                             devices=[CPU])


def test_resume_in_process_reproduces_the_uninterrupted_run(task, tmp_path):
  process = registry.build_process('fedavg', SPEC, task['config'],
                                   task['context'])
  runtime.set_execution_context('inprocess', 'cpu')
  straight = _weights_after_rounds('fedavg', process, task)
  _weights_after_rounds('fedavg', process, task, str(tmp_path), rounds=2,
                        checkpoint_every=1)
  resumed = _weights_after_rounds('fedavg', process, task, str(tmp_path),
                                  checkpoint_every=1, resume=True)
  for a, b in zip(straight, resumed):
    np.testing.assert_array_equal(a, b)
  json.dumps(runtime.execution_summary())  # Goes into summary.json.


def test_clients_datasets_and_all_equal_values():
  runtime.set_execution_context('inprocess', 'cpu')

  @tff.tensorflow.computation(tff.SequenceType(np.float32), np.float32)
  def scaled_sum(dataset, scale):
    return dataset.reduce(np.float32(0), lambda s, x: s + x) * scale

  @tff.federated_computation(
      tff.FederatedType(tff.SequenceType(np.float32), tff.CLIENTS),
      tff.FederatedType(np.float32, tff.SERVER))
  def per_client_and_sum(datasets, scale):
    per_client = tff.federated_map(
        scaled_sum, (datasets, tff.federated_broadcast(scale)))
    return per_client, tff.federated_sum(per_client)

  datasets = [tf.data.Dataset.from_tensor_slices(np.float32([1, 2])),
              tf.data.Dataset.from_tensor_slices(np.float32([10]))]
  per_client, total = per_client_and_sum(datasets, np.float32(2))
  assert per_client == [6.0, 20.0] and total == 26.0
  # federated_sum arrives desugared into federated_aggregate.
  assert set(inprocess.intrinsics_in(per_client_and_sum)) == {
      'federated_broadcast', 'federated_zip_at_clients', 'federated_map',
      'federated_aggregate'}


def test_an_intrinsic_it_does_not_run_is_named():
  runtime.set_execution_context('inprocess', 'cpu')

  @tff.federated_computation
  def evaluated_at_clients():
    return tff.federated_eval(
        tff.tensorflow.computation(lambda: np.int32(1)), tff.CLIENTS)

  with pytest.raises(inprocess.UnsupportedIntrinsicError,
                     match='federated_eval_at_clients'):
    evaluated_at_clients()


def test_device_gpu_without_a_gpu_stops_with_one_line(monkeypatch):
  monkeypatch.setattr(inprocess, 'visible_gpus', lambda: [])
  with pytest.raises(errors.UserInputError, match='--device=gpu: .*no GPU'):
    runtime.set_execution_context('inprocess', 'gpu')
  assert inprocess.resolve_devices('auto') == ['/device:CPU:0']


@pytest.mark.parametrize('arguments, message', [
    (dict(executor='inprocess', workers=['127.0.0.1:8001']), '--workers'),
    (dict(executor='worker', device='gpu'), '--executor=inprocess'),
    (dict(executor='tpu'), '--executor'),
])
def test_impossible_combinations_name_their_flags(arguments, message):
  with pytest.raises(errors.UserInputError, match=message):
    runtime.set_execution_context(**arguments)


def test_clients_are_shared_round_robin_by_the_devices():
  placement = inprocess.Placement(['/device:GPU:0', '/device:GPU:1'])
  assert [placement.client_device(i) for i in range(5)] == [
      '/device:GPU:0', '/device:GPU:1', '/device:GPU:0', '/device:GPU:1',
      '/device:GPU:0']
  assert placement.server_device == '/device:GPU:0'
  placement.record(tf.constant(1.0))
  assert placement.used == [CPU]
