"""CReFF: gradient matching, classifier re-training, end to end."""

import collections
import functools

import numpy as np
import pytest
import tensorflow as tf

from tff_imbalance import errors
from tff_imbalance import runner
from tff_imbalance.data import arrays
from tff_imbalance.data import federated
from tff_imbalance.learning import classifier_gradients
from tff_imbalance.learning import registry
from tff_imbalance.learning import selection
from tff_imbalance.learning.algorithms import creff
from tff_imbalance.models import builders
from tff_imbalance.models import spec as spec_lib

NUM_CLASSES, NUM_CLIENTS = 4, 3
SPEC = spec_lib.ModelSpec('mlp', (6, 6, 1), NUM_CLASSES, seed=0)


def _classifier(rng, dim=5, classes=3):
  return collections.OrderedDict(
      kernel=tf.constant(rng.normal(size=(dim, classes)), tf.float32),
      bias=tf.constant(rng.normal(size=(classes,)), tf.float32))


def test_matching_loss_is_zero_on_the_real_features_and_decreases():
  rng = np.random.default_rng(0)
  classifier = _classifier(rng)
  labels = creff.feature_labels(3, 4)
  real_features = tf.constant(rng.normal(size=(12, 5)) + 2.0, tf.float32)
  real = classifier_gradients.class_mean_gradients(
      real_features, labels, classifier['kernel'], classifier['bias'], 3)
  kernel_gradients = real['values']['kernel']
  matched = tf.constant([1.0, 1.0, 0.0])
  assert creff.matching_loss(real_features, classifier, kernel_gradients,
                             matched) < 1e-4
  start = tf.constant(rng.normal(size=(12, 5)), tf.float32)
  matched_features, before, after = creff.match_features(
      start, classifier, kernel_gradients, matched, steps=30,
      learning_rate=0.1)
  assert after < 0.5 * before
  # Class 2 has no real gradient this round: its features do not move.
  np.testing.assert_array_equal(matched_features[8:], start[8:])


def test_block_gradients_equal_the_one_hot_class_gradients():
  rng = np.random.default_rng(2)
  classifier = _classifier(rng)
  features = tf.constant(rng.normal(size=(12, 5)), tf.float32)
  blocked = classifier_gradients.block_class_mean_gradients(
      features, classifier['kernel'], classifier['bias'], 3)
  one_hot = classifier_gradients.class_mean_gradients(
      features, creff.feature_labels(3, 4), classifier['kernel'],
      classifier['bias'], 3)['values']
  for name in ('kernel', 'bias'):
    np.testing.assert_allclose(blocked[name], one_hot[name], rtol=1e-5,
                               atol=1e-6)


def _zero_classifier(dim, classes):
  return collections.OrderedDict(kernel=tf.zeros([dim, classes]),
                                 bias=tf.zeros([classes]))


def test_retrained_classifier_fits_the_features_and_follows_ce():
  labels = creff.feature_labels(3, 2)
  features = tf.one_hot(labels, 3) * 3.0 + 0.1
  seed = tf.constant([0, 1])
  classifier = creff.retrain_classifier(
      features, labels, _zero_classifier(3, 3), epochs=50, batch_size=6,
      learning_rate=0.5, seed=seed)
  logits = features @ classifier['kernel'] + classifier['bias']
  np.testing.assert_array_equal(tf.argmax(logits, axis=1), labels)
  # A batch of all features: one epoch is one gradient step on mean CE.
  one_step = creff.retrain_classifier(
      features, labels, _zero_classifier(3, 3), epochs=1, batch_size=6,
      learning_rate=0.5, seed=seed)
  kernel, bias = tf.Variable(tf.zeros([3, 3])), tf.Variable(tf.zeros([3]))
  with tf.GradientTape() as tape:
    loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
        labels, features @ kernel + bias, from_logits=True))
  g_kernel, g_bias = tape.gradient(loss, [kernel, bias])
  np.testing.assert_allclose(one_step['kernel'], -0.5 * g_kernel, atol=1e-6)
  np.testing.assert_allclose(one_step['bias'], -0.5 * g_bias, atol=1e-6)


def _bias_after_updates(updates, learning_rate, classes):
  # With zero features and every label 0, each mini-batch's gradient is
  # softmax(b) - e_0 whatever its size and members: b follows this map.
  bias = np.zeros(classes)
  for _ in range(updates):
    probabilities = np.exp(bias) / np.exp(bias).sum()
    bias = bias - learning_rate * (probabilities - np.eye(classes)[0])
  return bias


def test_retraining_takes_epochs_times_ceil_n_over_b_updates():
  # N = 10 features, batch 4: ceil(10 / 4) = 3 updates per epoch (the last
  # batch holds 2), so 2 epochs are 6 SGD updates (the old full-batch
  # re-training took one per "step").
  classifier = creff.retrain_classifier(
      tf.zeros([10, 2]), tf.zeros([10], tf.int64), _zero_classifier(2, 3),
      epochs=2, batch_size=4, learning_rate=0.5, seed=tf.constant([0, 1]))
  np.testing.assert_array_equal(classifier['kernel'], 0.0)
  np.testing.assert_allclose(classifier['bias'], _bias_after_updates(6, 0.5, 3),
                             rtol=1e-5)
  for wrong in (2, 5, 7):
    assert not np.allclose(classifier['bias'],
                           _bias_after_updates(wrong, 0.5, 3), rtol=1e-3)


def test_a_step_budget_takes_exactly_that_many_updates():
  # 004 appendix C.2's "300 re-training steps": N = 10, batch 4 (3 updates an
  # epoch); 4 steps end inside the second epoch, 6 steps are 2 epochs.
  retrain = functools.partial(
      creff.retrain_classifier, tf.zeros([10, 2]), tf.zeros([10], tf.int64),
      _zero_classifier(2, 3), epochs=300, batch_size=4, learning_rate=0.5,
      seed=tf.constant([0, 1]))
  for steps in (1, 4, 6):
    np.testing.assert_allclose(retrain(steps=steps)['bias'],
                               _bias_after_updates(steps, 0.5, 3), rtol=1e-5)
  rng = np.random.default_rng(1)
  features = tf.constant(rng.normal(size=(10, 3)).astype(np.float32))
  labels = tf.constant(rng.integers(0, 3, 10))
  by_epochs = creff.retrain_classifier(
      features, labels, _zero_classifier(3, 3), epochs=2, batch_size=4,
      learning_rate=0.5, seed=tf.constant([0, 1]))
  by_steps = creff.retrain_classifier(
      features, labels, _zero_classifier(3, 3), epochs=7, batch_size=4,
      learning_rate=0.5, seed=tf.constant([0, 1]), steps=6)
  np.testing.assert_array_equal(by_steps['kernel'], by_epochs['kernel'])


def test_a_step_budget_makes_the_epochs_flag_moot():
  config = registry.AlgorithmConfig()
  flags = ['creff_retrain_epochs']
  assert registry.inapplicable_flags(
      'creff', config, creff.CReFFOptions(retrain_steps=300), flags) == [
          ('creff_retrain_epochs', '--creff_retrain_steps=0')]
  assert not registry.inapplicable_flags(
      'creff', config, creff.CReFFOptions(), flags)


def test_retraining_is_minibatch_sgd_in_the_seeded_epoch_orders():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(7, 4)).astype(np.float32)
  labels = np.array([0, 0, 1, 1, 1, 2, 2], np.int64)
  seed = tf.constant([3, 4])
  initial = creff.fresh_classifier(4, 3, tf.constant([5, 6]))
  got = creff.retrain_classifier(
      tf.constant(features), tf.constant(labels), initial, epochs=2,
      batch_size=3, learning_rate=0.3, seed=seed)
  # A plain numpy re-implementation over the same epoch orders.
  kernel = initial['kernel'].numpy().astype(np.float64)
  bias = initial['bias'].numpy().astype(np.float64)
  for epoch in range(2):
    order = creff.epoch_order(7, seed, tf.constant(epoch)).numpy()
    for start in range(0, 7, 3):
      x, y = features[order[start:start + 3]], labels[order[start:start + 3]]
      logits = x @ kernel + bias
      error = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
      error[np.arange(len(y)), y] -= 1.0
      kernel -= 0.3 * x.T @ error / len(y)
      bias -= 0.3 * error.mean(axis=0)
  np.testing.assert_allclose(got['kernel'], kernel, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got['bias'], bias, rtol=1e-4, atol=1e-5)
  # The orders differ across epochs and seeds; the same seed repeats them.
  orders = [creff.epoch_order(7, s, tf.constant(e)).numpy()
            for s, e in ((seed, 0), (seed, 1), (tf.constant([3, 5]), 0))]
  assert len({tuple(o) for o in orders}) == 3
  again = creff.retrain_classifier(
      tf.constant(features), tf.constant(labels), initial, epochs=2,
      batch_size=3, learning_rate=0.3, seed=seed)
  np.testing.assert_array_equal(got['kernel'], again['kernel'])


def test_fresh_classifier_is_a_seeded_nn_linear_draw():
  first = creff.fresh_classifier(16, 3, tf.constant([1, 2]))
  bound = 1.0 / np.sqrt(16)
  for value in first.values():
    assert np.all(np.abs(value) <= bound) and np.std(value) > 0.1 * bound
  again = creff.fresh_classifier(16, 3, tf.constant([1, 2]))
  other = creff.fresh_classifier(16, 3, tf.constant([1, 3]))
  np.testing.assert_array_equal(first['kernel'], again['kernel'])
  assert not np.allclose(first['kernel'], other['kernel'])


def _data():
  rng = np.random.default_rng(0)
  y = rng.integers(0, NUM_CLASSES, 120).astype(np.int64)
  x = (rng.random((120, 6, 6, 1)) * 0.3 + y[:, None, None, None] / 4).astype(
      np.float32)
  pool = arrays.LabeledArrays(x=x, y=y)
  parts = np.array_split(np.arange(120), NUM_CLIENTS)
  return pool, federated.build_federated_data(
      pool, parts, NUM_CLASSES, validation_fraction=0.0, seed=0)


@pytest.fixture(scope='module')
def process_and_data():
  config = registry.AlgorithmConfig(client_lr=0.1)
  options = creff.CReFFOptions(features_per_class=5, match_steps=5,
                               retrain_epochs=3, retrain_batch_size=8)
  context = registry.TaskContext(num_classes=NUM_CLASSES,
                                 num_clients=NUM_CLIENTS,
                                 train_class_counts=np.ones(NUM_CLASSES))
  return (registry.build_process('creff', SPEC, config, context, options),
          _data())


def test_model_weights_carry_the_retrained_classifier(process_and_data):
  process, (_, data) = process_and_data
  state = process.initialize()
  for round_num in range(2):
    output = process.next(state, data.round_inputs(
        range(NUM_CLIENTS), round_num=round_num, local_epochs=1, batch_size=8,
        seed=0, with_validation=False))
    state = output.state
    report = output.metrics['client_work']['round_report']['extension']
    assert report['matching_loss_after'] < report['matching_loss_before']
  weights = process.get_model_weights(state)
  retrained = state.client_work['broadcast']
  global_weights = state.global_model_weights
  model = SPEC.build_keras()
  classifier = builders.classifier_layer(model)
  weights.assign_weights_to(model)
  np.testing.assert_allclose(classifier.kernel.numpy(), retrained['kernel'])
  np.testing.assert_allclose(classifier.bias.numpy(), retrained['bias'])
  # The backbone is FedAvg's; FedAvg's own classifier stays in training.
  np.testing.assert_allclose(weights.trainable[0],
                             global_weights.trainable[0])
  assert not np.allclose(global_weights.trainable[-2], retrained['kernel'])


def test_end_to_end_with_the_runner(process_and_data):
  process, (_, data) = process_and_data
  evaluator = runner.Evaluator(
      SPEC, arrays.LabeledArrays(x=data.pool.x[:8], y=data.pool.y[:8]),
      np.ones(NUM_CLASSES))
  summary = runner.run(
      process, data, selection.UniformSelector(NUM_CLIENTS, NUM_CLIENTS, 0),
      evaluator,
      runner.RunConfig(rounds=2, local_epochs=1, batch_size=8, eval_every=2,
                       seed=0, quiet=True))
  assert summary['rounds'] == 2 and 0.0 <= summary['accuracy'] <= 1.0


@pytest.mark.parametrize('field, value', [
    ('features_per_class', 0), ('match_steps', 0), ('feature_lr', 0.0),
    ('retrain_epochs', 0), ('retrain_steps', -1), ('retrain_batch_size', 0),
    ('retrain_lr', -1.0),
    ('retrain_init', 'global')])
def test_bad_flags_name_the_flag(field, value):
  with pytest.raises(errors.UserInputError, match=f'--creff_{field}'):
    creff.CReFFOptions(**{field: value})
