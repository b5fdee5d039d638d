"""BalanceFL (003): loss terms by hand, sampling, augmentation, end to end."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from tff_imbalance import compat
from tff_imbalance import errors
from tff_imbalance import runner
from tff_imbalance.data import sampling
from tff_imbalance.learning import registry
from tff_imbalance.learning.algorithms import balancefl
from tff_imbalance.learning.algorithms import fedavg_family
from tff_imbalance.learning.client_work import balancefl_losses
from tff_imbalance.models import spec as spec_lib

tff = compat.tff

NUM_CLASSES = 4
SPEC = spec_lib.ModelSpec('mlp', (6, 6, 1), NUM_CLASSES, seed=3)
# Three clients with missing classes and a local long tail.
CLIENT_CLASS_COUNTS = ((9, 4, 1, 0), (12, 0, 0, 3), (0, 6, 5, 2))


def _softmax(z):
  e = np.exp(z - z.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


# ---- loss terms --------------------------------------------------------------


def test_distillation_is_zero_when_student_matches_teacher_on_absent():
  teacher = np.array([[1.0, 2.0, -1.0, 0.5]], np.float32)
  # Different activated logits (0, 1), equal absent ones up to a shift.
  student = np.array([[5.0, -3.0, 1.0, 2.5]], np.float32)
  absent = np.array([0.0, 0.0, 1.0, 1.0], np.float32)
  kd = balancefl_losses.absent_class_distillation(student, teacher, absent,
                                                  temperature=2.0)
  np.testing.assert_allclose(kd.numpy(), [0.0], atol=1e-6)
  moved = np.array([[1.0, 2.0, 1.0, 0.5]], np.float32)
  kd_moved = balancefl_losses.absent_class_distillation(moved, teacher, absent,
                                                        temperature=2.0)
  p = _softmax(np.array([-1.0, 0.5]) / 2)
  q = _softmax(np.array([1.0, 0.5]) / 2)
  np.testing.assert_allclose(kd_moved.numpy(), [np.sum(p * np.log(p / q))],
                             rtol=1e-5)


def test_distillation_is_zero_without_absent_classes_and_finite_gradient():
  student = tf.Variable([[1.0, 2.0, 3.0, 4.0]])
  with tf.GradientTape() as tape:
    kd = balancefl_losses.absent_class_distillation(
        student, tf.zeros([1, 4]), tf.zeros([4]), temperature=2.0)
  np.testing.assert_allclose(kd.numpy(), [0.0])
  gradient = tape.gradient(kd, student).numpy()
  assert np.all(np.isfinite(gradient)) and np.allclose(gradient, 0.0)


def test_smooth_term_and_activated_ce_match_hand_computation():
  logits = np.array([[2.0, 0.0, 1.0, 7.0], [0.5, 0.5, -1.0, 3.0]], np.float32)
  activated = np.array([1.0, 1.0, 1.0, 0.0], np.float32)
  q = _softmax(logits[:, :3].astype(np.float64))
  smooth = balancefl_losses.activated_negative_entropy(logits, activated)
  np.testing.assert_allclose(smooth.numpy(), np.sum(q * np.log(q), axis=1),
                             rtol=1e-5)
  # Uniform over k activated classes is the minimum, -log k.
  flat = balancefl_losses.activated_negative_entropy(
      np.array([[0.0, 0.0, 0.0, 9.0]], np.float32), activated)
  np.testing.assert_allclose(flat.numpy(), [-np.log(3.0)], rtol=1e-6)
  ce = balancefl_losses.activated_cross_entropy(
      np.array([0, 2], np.int64), logits, activated)
  np.testing.assert_allclose(ce.numpy(), -np.log([q[0, 0], q[1, 2]]),
                             rtol=1e-5)


# ---- sampling and augmentation -------------------------------------------------


def _labelled_dataset(counts, batch_size=16, seed=0):
  y = np.repeat(np.arange(len(counts)), counts).astype(np.int64)
  np.random.default_rng(seed).shuffle(y)
  x = y.astype(np.float32)[:, None]
  return tf.data.Dataset.from_tensor_slices(
      collections.OrderedDict(x=x, y=y)).batch(batch_size)


def test_balanced_sampling_draws_present_classes_uniformly():
  counts = np.array([300, 30, 0, 70])
  dataset = sampling.class_balanced(
      _labelled_dataset(counts), tf.constant(counts), batch_size=32,
      seed=tf.constant([7, 0], tf.int64))
  labels = np.concatenate([b['y'].numpy() for b in dataset])
  assert len(labels) == counts.sum()
  drawn = np.bincount(labels, minlength=4)
  assert drawn[2] == 0
  # Chi-square against uniform over the 3 present classes (2 dof; 13.8 is
  # p = 0.001). The input's own mix would score above 300.
  expected = counts.sum() / 3
  chi2 = np.sum((drawn[[0, 1, 3]] - expected)**2 / expected)
  assert chi2 < 13.8, drawn
  original_chi2 = np.sum((counts[[0, 1, 3]] - expected)**2 / expected)
  assert original_chi2 > 100
  # Each example of the class is its own value (x = y here), so the
  # minority class is over-sampled from its 30 examples, not invented.
  assert all(float(b['x'][i, 0]) == float(b['y'][i])
             for b in dataset for i in range(len(b['y'])))


def test_balanced_sampling_is_seeded():

  def labels(seed):
    counts = np.array([50, 5, 20, 0])
    dataset = sampling.class_balanced(_labelled_dataset(counts),
                                      tf.constant(counts), 16,
                                      tf.constant([seed, 0], tf.int64))
    return np.concatenate([b['y'].numpy() for b in dataset])

  np.testing.assert_array_equal(labels(3), labels(3))
  assert not np.array_equal(labels(3), labels(4))


def test_augmentation_probability_is_zero_for_the_largest_class():
  p = balancefl.augmentation_probability(tf.constant([40, 10, 0, 30]))
  np.testing.assert_allclose(p.numpy(), [0.0, 0.75, 0.0, 0.25])


def test_pooled_covariance_and_noise_factor_match_numpy():
  rng = np.random.default_rng(1)
  labels = np.array([0] * 7 + [1] * 3 + [3] * 5)
  features = rng.normal(size=(len(labels), 3)).astype(np.float32)
  counts = np.bincount(labels, minlength=NUM_CLASSES)
  one_hot = np.eye(NUM_CLASSES)[labels]
  sigma = balancefl.pooled_covariance(
      tf.constant(features.T @ features), tf.constant(
          (one_hot.T @ features).astype(np.float32)), tf.constant(counts))
  expected = sum(counts[c] * np.cov(features[labels == c].T, bias=True)
                 for c in (0, 1, 3)) / len(labels)
  np.testing.assert_allclose(sigma.numpy(), expected, atol=1e-5)
  factor = balancefl.noise_factor(sigma).numpy()
  np.testing.assert_allclose(factor @ factor.T, expected, atol=1e-5)


def test_bad_options_raise_user_input_errors_naming_the_flag():
  with pytest.raises(errors.UserInputError, match='--balancefl_temperature'):
    balancefl.BalanceFLOptions(temperature=0.0)
  with pytest.raises(errors.UserInputError, match='--balancefl_absent'):
    balancefl.BalanceFLOptions(absent='node')
  with pytest.raises(errors.UserInputError, match='--balancefl_smooth_weight'):
    balancefl.BalanceFLOptions(smooth_weight=-1.0)


# ---- end to end ---------------------------------------------------------------


def _client_inputs(seed=0):
  rng = np.random.default_rng(seed)
  inputs = []
  for k, counts in enumerate(CLIENT_CLASS_COUNTS):
    y = np.repeat(np.arange(NUM_CLASSES), counts).astype(np.int64)
    rng.shuffle(y)
    x = (rng.random((len(y), 6, 6, 1)) + y[:, None, None, None]).astype(
        np.float32)
    train = tf.data.Dataset.from_tensor_slices(
        collections.OrderedDict(x=x, y=y)).batch(4)
    inputs.append(collections.OrderedDict(
        train=train,
        client_index=tf.data.Dataset.from_tensors(np.int32(k))))
  return inputs


def _sgd(lr=0.1):
  return tff.learning.optimizers.build_sgdm(learning_rate=lr)


def _train(process, inputs, rounds=2):
  state = process.initialize()
  for _ in range(rounds):
    output = process.next(state, inputs)
    state = output.state
  weights = process.get_model_weights(state)
  return np.concatenate([np.ravel(w) for w in weights.trainable]), output


def _balancefl(**switches):
  options = balancefl.BalanceFLOptions(**switches)
  return balancefl.build_balancefl(SPEC, _sgd(), _sgd(1.0), options,
                                   batch_size=4, seed=SPEC.seed)


@pytest.fixture(scope='module')
def full_balancefl_weights():
  weights, output = _train(_balancefl(), _client_inputs())
  return weights, output


def test_balancefl_end_to_end_reports_true_label_counts(
    full_balancefl_weights):
  weights, output = full_balancefl_weights
  assert np.all(np.isfinite(weights))
  client_work = output.metrics['client_work']
  # Balanced sampling changes the batches, not the reported composition.
  np.testing.assert_array_equal(client_work['round_report']['label_counts'],
                                np.sum(CLIENT_CLASS_COUNTS, axis=0))
  assert client_work['train']['num_examples'] == np.sum(CLIENT_CLASS_COUNTS)
  assert np.isfinite(client_work['train']['loss'])


def test_registry_builds_the_same_reproducible_balancefl(
    full_balancefl_weights):
  process = registry.build_process(
      'balancefl', SPEC,
      registry.AlgorithmConfig(client_lr=0.1, batch_size=4),
      registry.TaskContext(NUM_CLASSES, 3, np.ones(NUM_CLASSES)))
  assert runner.wants_client_index(process)
  again, _ = _train(process, _client_inputs())
  np.testing.assert_array_equal(again, full_balancefl_weights[0])


def test_every_switch_off_is_fedavg():
  off = dict(knowledge_inheritance=False, balanced_sampling=False,
             feature_augmentation=False, smooth_regularization=False)
  ours, _ = _train(_balancefl(**off), _client_inputs(), rounds=1)
  fedavg = fedavg_family.build_local_training_process(SPEC, _sgd(), _sgd(1.0))
  datasets = [client['train'] for client in _client_inputs()]
  theirs, _ = _train(fedavg, datasets, rounds=1)
  np.testing.assert_allclose(ours, theirs, atol=1e-6)


@pytest.mark.parametrize('switch', [
    dict(knowledge_inheritance=False),
    dict(balanced_sampling=False),
    dict(feature_augmentation=False),
    dict(smooth_regularization=False),
    dict(absent='batch'),
])
def test_each_switch_changes_the_result(switch, full_balancefl_weights):
  changed, _ = _train(_balancefl(**switch), _client_inputs())
  assert np.all(np.isfinite(changed))
  assert np.max(np.abs(changed - full_balancefl_weights[0])) > 1e-4


def test_balanced_sampling_of_an_empty_client_is_empty():
  dataset = sampling.class_balanced(
      _labelled_dataset(np.zeros(3, np.int64)), tf.zeros([3], tf.int64), 8,
      tf.constant([1, 2], tf.int64))
  assert not list(dataset)
