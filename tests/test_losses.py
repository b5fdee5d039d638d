"""Losses against hand-computed values."""

import numpy as np
import pytest
import tensorflow as tf

from tff_imbalance import errors
from tff_imbalance import losses

LOGITS = tf.constant([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [1.0, 1.0, 1.0]])
LABELS = tf.constant([0, 1, 2], tf.int64)


def test_cross_entropy_is_minus_log_softmax_of_the_label():
  expected = -np.log(tf.nn.softmax(LOGITS).numpy()[[0, 1, 2], [0, 1, 2]])
  np.testing.assert_allclose(losses.cross_entropy(LABELS, LOGITS), expected,
                             rtol=1e-6)


def test_focal_with_gamma_zero_and_alpha_one_equals_cross_entropy():
  np.testing.assert_allclose(
      losses.focal_loss(gamma=0.0, alpha=1.0)(LABELS, LOGITS),
      losses.cross_entropy(LABELS, LOGITS), rtol=1e-6)


def test_focal_matches_the_formula_with_per_class_alpha():
  p_t = tf.nn.softmax(LOGITS).numpy()[[0, 1, 2], [0, 1, 2]]
  alpha = [0.25, 0.5, 2.0]
  expected = -np.array(alpha) * (1 - p_t)**2 * np.log(p_t)
  np.testing.assert_allclose(
      losses.focal_loss(gamma=2.0, alpha=alpha)(LABELS, LOGITS), expected,
      rtol=1e-5)


@pytest.mark.parametrize('gamma', [0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize('x', [-3.0, -0.2, 0.7, 4.0])
def test_focal_gradient_matches_eq5_in_the_binary_case(gamma, x):
  # Two classes with logits [0, x] and label 1 is the binary case with
  # p_t = sigmoid(x), y = +1, where 000 eq. 5 reads
  # dFL/dx = (1 - p_t)^gamma (gamma p_t log p_t + p_t - 1).
  logit = tf.Variable(x)
  with tf.GradientTape() as tape:
    logits = tf.stack([[0.0, logit]])
    value = losses.focal_loss(gamma=gamma)(tf.constant([1], tf.int64),
                                           logits)[0]
  grad = tape.gradient(value, logit).numpy()
  p = 1 / (1 + np.exp(-x))
  expected = (1 - p)**gamma * (gamma * p * np.log(p) + p - 1)
  np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize('gamma', [0.0, 0.5, 2.0])
def test_focal_has_no_nan_at_extreme_logits(gamma):
  logits = tf.Variable([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]])
  labels = tf.constant([0, 0], tf.int64)
  with tf.GradientTape() as tape:
    value = tf.reduce_sum(losses.focal_loss(gamma=gamma)(labels, logits))
  grad = tape.gradient(value, logits)
  assert np.isfinite(value.numpy())
  assert np.all(np.isfinite(grad.numpy()))


@pytest.mark.parametrize('kwargs, flag', [
    (dict(gamma=-1.0), '--focal_gamma'),
    (dict(alpha=0.0), '--focal_alpha'),
    (dict(alpha=[1.0, -2.0]), '--focal_alpha'),
])
def test_focal_rejects_bad_parameters(kwargs, flag):
  with pytest.raises(errors.UserInputError, match=flag):
    losses.focal_loss(**kwargs)


def test_keras_wrapper_is_the_batch_mean():
  loss = losses.KerasLoss(losses.focal_loss(gamma=2.0))
  np.testing.assert_allclose(
      loss(LABELS, LOGITS),
      np.mean(losses.focal_loss(gamma=2.0)(LABELS, LOGITS)), rtol=1e-6)


def test_squared_error_is_half_the_squared_distance_to_the_one_hot():
  logits = tf.constant([[0.0, 0.0], [np.log(3.0), 0.0]])
  # softmax: (0.5, 0.5) and (0.75, 0.25).
  got = losses.squared_error(tf.constant([0, 1], tf.int64), logits)
  np.testing.assert_allclose(got, [0.5 * (0.25 + 0.25),
                                   0.5 * (0.75 ** 2 + 0.75 ** 2)], rtol=1e-6)


@pytest.mark.parametrize('squared', [False, True])
def test_mfe_is_the_sum_of_the_group_mean_errors(squared):
  # Wang et al. 2016: classes 0, 1 majority, 2 minority. Batch of 4: three
  # majority examples with errors a, b, c and one minority example with d.
  labels = tf.constant([0, 1, 0, 2], tf.int64)
  logits = tf.constant([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0],
                        [1.0, 0.0, 0.0]])
  minority = [0.0, 0.0, 1.0]
  errors_ = losses.squared_error(labels, logits).numpy()
  fpe, fne = errors_[:3].mean(), errors_[3]
  expected = fpe ** 2 + fne ** 2 if squared else fpe + fne
  per_example = losses.mean_false_error(squared)(labels, logits, minority)
  np.testing.assert_allclose(tf.reduce_mean(per_example), expected,
                             rtol=1e-6)
  # Not the plain mean: the lone minority example weighs as much as the
  # three majority ones together.
  assert abs(errors_.mean() - expected) > 1e-3


def test_mfe_gradient_is_that_of_fpe_plus_fne_and_msfe_of_their_squares():
  labels = tf.constant([0, 1, 2, 2], tf.int64)
  logits = tf.Variable([[2.0, 0.0, 0.0], [0.0, 1.0, 0.5], [0.0, 0.0, 3.0],
                        [1.0, 0.0, 0.0]])
  minority = [0.0, 0.0, 1.0]
  for squared in (False, True):
    with tf.GradientTape(persistent=True) as tape:
      per_example = losses.mean_false_error(squared)(labels, logits, minority)
      got = tf.reduce_mean(per_example)
      errors_ = losses.squared_error(labels, logits)
      fpe = tf.reduce_mean(errors_[:2])
      fne = tf.reduce_mean(errors_[2:])
      want = fpe ** 2 + fne ** 2 if squared else fpe + fne
    np.testing.assert_allclose(tape.gradient(got, logits),
                               tape.gradient(want, logits), rtol=1e-5,
                               atol=1e-7)


def test_mfe_with_one_group_absent_from_the_batch_is_that_groups_mean():
  labels = tf.constant([0, 1], tf.int64)
  logits = tf.constant([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
  errors_ = losses.squared_error(labels, logits).numpy()
  got = losses.mean_false_error()(labels, logits, [0.0, 0.0, 1.0])
  np.testing.assert_allclose(tf.reduce_mean(got), errors_.mean(), rtol=1e-6)
