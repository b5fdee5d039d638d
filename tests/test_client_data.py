"""A user's TFF ClientData through our runner (`ClientDataPopulation`).

The reference is `FederatedData` built from the same arrays: the adapter must
give the same batches in the same seeded order, and so the same run.
"""

import collections
import csv
import os

import numpy as np
import pytest
import tensorflow as tf

from tff_imbalance import compat
from tff_imbalance import errors
from tff_imbalance import report
from tff_imbalance import runner
from tff_imbalance.data import arrays
from tff_imbalance.data import client_data as client_data_lib
from tff_imbalance.data import federated
from tff_imbalance.learning import selection
from tff_imbalance.models import spec as spec_lib

tff = compat.tff

NUM_CLASSES = 3
SPEC = spec_lib.ModelSpec('mlp', (4, 4, 1), NUM_CLASSES, seed=0)
CLIENT_SIZES = {'w7': 9, 'w2': 12, 'w5': 7}


def _client_arrays():
  """Per client (x float32, y int32): a ClientData's usual label type."""
  rng = np.random.default_rng(0)
  clients = {}
  for client_id, n in CLIENT_SIZES.items():
    y = rng.integers(0, NUM_CLASSES, n).astype(np.int32)
    x = (rng.random((n, 4, 4, 1)) * 0.3 + y[:, None, None, None] / 3).astype(
        np.float32)
    clients[client_id] = (x, y)
  return clients


def _client_data(structure):
  clients = _client_arrays()
  if structure == 'dict':
    clients = {k: collections.OrderedDict(x=x, y=y)
               for k, (x, y) in clients.items()}
  return tff.simulation.datasets.TestClientData(clients)


def _reference(client_ids, validation_fraction):
  """FederatedData holding the same clients in the same order."""
  clients = _client_arrays()
  xs = [clients[k][0] for k in client_ids]
  ys = [clients[k][1].astype(np.int64) for k in client_ids]
  ends = np.cumsum([len(y) for y in ys])
  parts = [np.arange(end - len(y), end) for y, end in zip(ys, ends)]
  return federated.build_federated_data(
      arrays.LabeledArrays(x=np.concatenate(xs), y=np.concatenate(ys)),
      parts, NUM_CLASSES, validation_fraction=validation_fraction, seed=3,
      client_ids=client_ids)


def _assert_same_inputs(ours, reference):
  """Same client inputs: structure, element specs, and every batch."""
  assert len(ours) == len(reference)
  for a, b in zip(ours, reference):
    if isinstance(b, dict):
      assert list(a) == list(b)
      datasets = zip(a.values(), b.values())
    else:
      datasets = [(a, b)]
    for dataset_a, dataset_b in datasets:
      assert dataset_a.element_spec == dataset_b.element_spec
      for batch_a, batch_b in zip(dataset_a.as_numpy_iterator(),
                                  dataset_b.as_numpy_iterator(), strict=True):
        tf.nest.map_structure(np.testing.assert_array_equal, batch_a, batch_b)


@pytest.mark.parametrize('structure', ['tuple', 'dict'])
def test_round_inputs_match_federated_data_batch_for_batch(structure):
  client_data = _client_data(structure)
  population = client_data_lib.ClientDataPopulation(
      client_data, validation_fraction=0.25, seed=3)
  reference = _reference(client_data.client_ids, 0.25)
  assert population.client_ids == reference.client_ids
  for options in (dict(with_validation=True),
                  dict(with_validation=False, with_population=True)):
    _assert_same_inputs(
        population.round_inputs([2, 0], round_num=3, local_epochs=2,
                                batch_size=4, seed=5, **options),
        reference.round_inputs([2, 0], round_num=3, local_epochs=2,
                               batch_size=4, seed=5, **options))
  _assert_same_inputs(
      population.only_client(1).round_inputs(
          [0], round_num=2, local_epochs=1, batch_size=4, seed=5,
          with_validation=True),
      reference.only_client(1).round_inputs(
          [0], round_num=2, local_epochs=1, batch_size=4, seed=5,
          with_validation=True))


def test_a_subset_of_clients_keeps_each_clients_split():
  client_data = _client_data('tuple')
  whole = client_data_lib.ClientDataPopulation(
      client_data, validation_fraction=0.25, seed=3)
  last = client_data.client_ids[-1]
  subset = client_data_lib.ClientDataPopulation(
      client_data, validation_fraction=0.25, seed=3, client_ids=[last])
  np.testing.assert_array_equal(subset.validation_examples(0).y,
                                whole.validation_examples(2).y)
  np.testing.assert_array_equal(subset.train_examples(0).x,
                                whole.train_examples(2).x)


def _metrics_rows(run_dir):
  with open(os.path.join(run_dir, report.METRICS_FILE), newline='') as f:
    rows = list(csv.DictReader(f))
  for row in rows:
    del row['round_seconds']  # Wall time is the one thing allowed to differ.
  return rows


def test_runner_trains_resumes_and_reports_on_a_client_data(tmp_path):
  client_data = _client_data('tuple')
  reference = _reference(client_data.client_ids, 0.0)
  process = tff.learning.algorithms.build_weighted_fed_avg(
      SPEC.tff_model_fn(),
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1),
      loop_implementation=tff.learning.LoopImplementation.DATASET_ITERATOR)
  counts = np.bincount(reference.train_labels(), minlength=NUM_CLASSES)
  evaluate = runner.Evaluator(SPEC, reference.pool, counts)

  def run(data, output_dir, rounds, **config):
    return runner.run(
        process, data, selection.UniformSelector(3, 2, seed=0), evaluate,
        runner.RunConfig(rounds=rounds, local_epochs=2, batch_size=4,
                         eval_every=1, seed=1, quiet=True,
                         output_dir=str(output_dir), checkpoint_every=1,
                         **config))

  expected = run(reference, tmp_path / 'arrays', rounds=2)
  population = client_data_lib.ClientDataPopulation(client_data)
  run(population, tmp_path / 'client_data', rounds=1)
  resumed = run(population, tmp_path / 'client_data', rounds=2, resume=True)
  assert resumed == expected
  assert _metrics_rows(tmp_path / 'client_data') == _metrics_rows(
      tmp_path / 'arrays')
  with np.load(tmp_path / 'arrays' / report.WEIGHTS_FILE) as a, np.load(
      tmp_path / 'client_data' / report.WEIGHTS_FILE) as b:
    for name in a.files:
      np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.parametrize('clients, expected', [
    ({'a': collections.OrderedDict(pixels=np.zeros((2, 3), np.float32),
                                   label=np.zeros(2, np.int32))},
     'client_data.preprocess'),
    ({'a': (np.zeros((2, 3), np.float32), np.zeros(2, np.float32))},
     'integer label'),
    ({'a': (np.zeros((2, 3), np.float32), np.zeros((2, 1), np.int32))},
     'scalar integer label'),
])
def test_unusable_examples_are_one_clear_error(clients, expected):
  with pytest.raises(errors.UserInputError, match=expected):
    client_data_lib.ClientDataPopulation(
        tff.simulation.datasets.TestClientData(clients))


def test_unknown_client_ids_are_one_clear_error():
  with pytest.raises(errors.UserInputError, match=r"client_ids: \['nobody'\]"):
    client_data_lib.ClientDataPopulation(_client_data('tuple'),
                                         client_ids=['w2', 'nobody'])
