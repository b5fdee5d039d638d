"""Tests for tff_imbalance.experiment: the library API without absl.

A user's own Keras model, a TFF `ClientData` or a dict of client arrays, and
TFF's own builder next to ours; errors name the Python argument.
"""

import collections
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from tff_imbalance import compat  # pylint: disable=g-import-not-at-top
from tff_imbalance import errors  # pylint: disable=g-import-not-at-top
from tff_imbalance import experiment  # pylint: disable=g-import-not-at-top
from tff_imbalance import report  # pylint: disable=g-import-not-at-top
from tff_imbalance.data import arrays  # pylint: disable=g-import-not-at-top
from tff_imbalance.learning import method  # pylint: disable=g-import-not-at-top
from tff_imbalance.learning.algorithms import fedavg_family  # pylint: disable=g-import-not-at-top
from tff_imbalance.learning.algorithms import ratio  # pylint: disable=g-import-not-at-top
from tff_imbalance.models import spec as spec_lib  # pylint: disable=g-import-not-at-top

tff = compat.tff

NUM_CLASSES = 3
FEATURES = 4


def _build_model():
  inputs = tf.keras.Input(shape=(FEATURES,))
  hidden = tf.keras.layers.Dense(
      6, activation='relu',
      kernel_initializer=tf.keras.initializers.GlorotNormal(seed=1))(inputs)
  logits = tf.keras.layers.Dense(
      NUM_CLASSES, name='head',
      kernel_initializer=tf.keras.initializers.GlorotNormal(seed=2))(hidden)
  return tf.keras.Model(inputs, logits, name='mlp')


def _examples(n, seed, label_dtype=np.int32):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, NUM_CLASSES, n)
  x = rng.normal(size=(n, FEATURES)).astype(np.float32) + y[:, None]
  return x, y.astype(label_dtype)


# Client k holds 6 + 2k examples; the clients' label mixes differ.
CLIENTS = {f'c{k}': _examples(6 + 2 * k, seed=k) for k in range(3)}
TEST = _examples(12, seed=9, label_dtype=np.int64)


def test_dict_of_arrays_runs_repeatably_with_a_user_model(tmp_path):
  weights = []
  for run in ('a', 'b'):
    summary = experiment.run_experiment(
        'fedavg', _build_model, CLIENTS, TEST, rounds=1, clients_per_round=2,
        batch_size=4, seed=5, classifier_layer='head',
        output_dir=str(tmp_path / run))
    with np.load(tmp_path / run / report.WEIGHTS_FILE) as saved:
      weights.append({name: saved[name] for name in saved.files})
  assert summary['model'] == 'mlp' and summary['algo'] == 'fedavg'
  assert summary['train_class_counts'] == np.bincount(
      np.concatenate([y for _, y in CLIENTS.values()]),
      minlength=NUM_CLASSES).tolist()
  # The user's 4-6-3 MLP, not ours.
  assert weights[0]['trainable_0'].shape == (FEATURES, 6)
  assert weights[0].keys() == weights[1].keys()
  for name in weights[0]:
    np.testing.assert_array_equal(weights[0][name], weights[1][name])


def test_tff_fedavg_with_the_monitor_reports_the_true_composition():
  """TFF's own builder, monitored, on a ClientData of (x, y) tuples with
  int32 labels: the monitor counts the true composition itself."""
  client_data = tff.simulation.datasets.TestClientData(CLIENTS)
  optimizer = tff.learning.optimizers.build_sgdm(learning_rate=0.1)
  process = ratio.build_monitored(
      fedavg_family.build_tff_fedavg(
          spec_lib.ModelSpec.from_keras(
              _build_model, classifier_layer='head'), optimizer, optimizer),
      spec_lib.as_model_spec(_build_model, classifier_layer='head'),
      optimizer, arrays.LabeledArrays(*_examples(9, seed=7)), local_epochs=1,
      batch_size=4)
  summary = experiment.run_experiment(
      process, _build_model, client_data, TEST, rounds=1, clients_per_round=3,
      batch_size=4, classifier_layer='head')
  released = summary[report.RELEASED_KEY]
  # Every client trains (cohort = population), each example counted with
  # its client's weight n_k: M_i = sum_k n_k N_i^k (monitor's eq. 8).
  weighted = sum(len(y) * np.bincount(y, minlength=NUM_CLASSES)
                 for _, y in CLIENTS.values())
  np.testing.assert_allclose(
      released['monitor_true_composition']['last'],
      weighted / weighted.sum(), rtol=1e-5)
  assert 0 < released['monitor_cosine_similarity']['last'] <= 1


@pytest.mark.parametrize('algo, settings, message', [
    ('ratio', {}, r"algo='ratio' \(--algo=ratio\) needs .* pass aux_data"),
    ('fedavg', dict(config=method.AlgorithmConfig(monitor=True)),
     r'monitor=True \(--monitor\) needs .* pass aux_data'),
    ('fedfocal', dict(validation_fraction=0.0),
     r'validation_fraction=0 \(--validation_fraction=0\) leaves'),
    ('fedavg', dict(validation_fraction=1.5),
     r'validation_fraction \(--validation_fraction\) must be in \[0, 1\)'),
    ('nope', {}, r"--algo must be one of .*\(got algo='nope'\)"),
])
def test_errors_name_the_python_argument(algo, settings, message):
  with pytest.raises(errors.UserInputError, match=message):
    experiment.prepare(algo, _build_model, CLIENTS, TEST, rounds=1,
                       clients_per_round=2, classifier_layer='head',
                       **settings)


@pytest.mark.parametrize('train, test, message', [
    ([1, 2], TEST, 'train must be a tff.simulation.datasets.ClientData'),
    (CLIENTS, TEST[0], r'test must be \(x, y\)'),
    (CLIENTS, (TEST[0], TEST[1][:3]), 'test: x and y differ in length'),
])
def test_bad_data_names_the_argument(train, test, message):
  with pytest.raises(errors.UserInputError, match=message):
    experiment.prepare('fedavg', _build_model, train, test, rounds=1,
                       classifier_layer='head')


def test_own_process_refuses_method_settings():
  process = fedavg_family.build_tff_fedavg(
      spec_lib.ModelSpec.from_keras(_build_model,
                                               classifier_layer='head'),
      tff.learning.optimizers.build_sgdm(learning_rate=0.1),
      tff.learning.optimizers.build_sgdm(learning_rate=1.0))
  with pytest.raises(errors.UserInputError, match='pass algo by name'):
    experiment.prepare(process, _build_model, CLIENTS, TEST, rounds=1,
                       aux_data=TEST, classifier_layer='head')


def test_client_data_with_dict_examples_is_adapted():
  client_data = tff.simulation.datasets.TestClientData({
      k: collections.OrderedDict(x=x, y=y) for k, (x, y) in CLIENTS.items()})
  prepared = experiment.prepare('fedavg', _build_model, client_data, TEST,
                                rounds=1, clients_per_round=2,
                                classifier_layer='head')
  assert prepared.data.num_clients == 3
  assert prepared.train_class_counts.sum() == sum(
      len(y) for _, y in CLIENTS.values())


def test_centralized_pools_a_client_data():
  client_data = tff.simulation.datasets.TestClientData(CLIENTS)
  prepared = experiment.prepare('centralized', _build_model, client_data,
                                TEST, rounds=1, classifier_layer='head')
  assert prepared.data.num_clients == 1
  assert len(prepared.data.train_examples(0)) == sum(
      len(y) for _, y in CLIENTS.values())
