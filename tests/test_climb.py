"""CLIMB: the dual update, the aggregation weights, and duals that move."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from tff_imbalance import compat
from tff_imbalance import errors
from tff_imbalance import runner
from tff_imbalance.data import arrays
from tff_imbalance.data import federated
from tff_imbalance.learning import registry
from tff_imbalance.learning.algorithms import centralized
from tff_imbalance.learning.algorithms import climb
from tff_imbalance.models import spec as spec_lib

tff = compat.tff

NUM_CLASSES, NUM_CLIENTS = 4, 3
SPEC = spec_lib.ModelSpec('mlp', (6, 6, 1), NUM_CLASSES, seed=1)


def test_dual_update_matches_hand_computation():
  duals = np.array([0.0, 0.5, 1.0, 2.0], np.float32)
  # Clients 0, 1 and 3 took part with losses 1.0, 2.0, 6.0 (mean 3.0).
  loss_sums = np.array([1.0, 2.0, 0.0, 6.0], np.float32)
  participated = np.array([1.0, 1.0, 0.0, 1.0], np.float32)
  new = climb.dual_update(duals, loss_sums, participated, epsilon=0.5,
                          dual_lr=2.0, max_dual=2.5)
  # lambda + 2 (l - 3 - 0.5) / 4 = (-1.25, -0.25, -, 3.25), clipped to
  # [0, 2.5]; client 2 did not take part and keeps its dual.
  np.testing.assert_allclose(new, [0.0, 0.0, 1.0, 2.5], atol=1e-6)
  inside = climb.dual_update(duals, loss_sums, participated, epsilon=0.5,
                             dual_lr=0.4, max_dual=10.0)
  np.testing.assert_allclose(inside, [0.0, 0.35, 1.0, 2.25], atol=1e-6)


def test_aggregation_multiplier_is_one_plus_dual_minus_mean_floored():
  duals = tf.constant([0.0, 1.0, 5.0])  # Mean 2.
  multipliers = [float(climb.aggregation_multiplier(duals, k))
                 for k in range(3)]
  np.testing.assert_allclose(multipliers, [0.0, 0.0, 4.0])
  np.testing.assert_allclose(
      float(climb.aggregation_multiplier(tf.constant([0.2, 0.4]), 1)), 1.1,
      rtol=1e-6)


def _data():
  """Three clients; client 2's labels disagree with its images."""
  rng = np.random.default_rng(0)
  y = rng.integers(0, NUM_CLASSES, 90).astype(np.int64)
  x = (rng.random((90, 6, 6, 1)) * 0.2 + y[:, None, None, None] / 4).astype(
      np.float32)
  y[60:] = (y[60:] + 2) % NUM_CLASSES
  pool = arrays.LabeledArrays(x=x, y=y)
  parts = np.array_split(np.arange(90), NUM_CLIENTS)
  return federated.build_federated_data(pool, parts, NUM_CLASSES,
                                        validation_fraction=0.0, seed=0)


def _mean_ce(weights, pool, indices):
  model = SPEC.build_keras()
  weights.assign_weights_to(model)
  logits = model(pool.x[indices], training=False)
  return float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      pool.y[indices], logits)))


def test_duals_move_towards_the_client_with_the_higher_loss():
  data = _data()
  process = climb.build_climb(
      SPEC, tff.learning.optimizers.build_sgdm(learning_rate=0.3),
      tff.learning.optimizers.build_sgdm(learning_rate=1.0), NUM_CLIENTS,
      epsilon=0.01, dual_lr=30.0)
  assert runner.wants_client_index(process)
  state = process.initialize()
  for round_num in range(1, 3):
    duals = np.asarray(state.client_work['broadcast'])
    received = process.get_model_weights(state)
    inputs = data.round_inputs(range(NUM_CLIENTS), round_num=round_num,
                               local_epochs=5, batch_size=8, seed=0,
                               with_validation=False, with_client_index=True)
    output = process.next(state, inputs)
    state = output.state
    report = output.metrics['client_work']['round_report']['extension']
    # The constraint signal is the received model's loss on each client.
    expected_losses = [_mean_ce(received, data.pool, data.train_indices[k])
                       for k in range(NUM_CLIENTS)]
    np.testing.assert_allclose(report['loss_sums'], expected_losses,
                               rtol=1e-4)
    np.testing.assert_array_equal(report['participated'], np.ones(3))
    np.testing.assert_allclose(
        state.client_work['broadcast'],
        climb.dual_update(duals, report['loss_sums'], report['participated'],
                          epsilon=0.01, dual_lr=30.0, max_dual=100.0),
        rtol=1e-5)
  final_duals = np.asarray(state.client_work['broadcast'])
  # After one round the model fits clients 0 and 1, not client 2.
  assert report['loss_sums'][2] > 1.3 * max(report['loss_sums'][:2])
  assert final_duals[2] > 1.0
  assert final_duals[2] > 5 * max(final_duals[:2])


def _client_inputs(data, k):
  examples = data.pool.take(data.train_indices[k])
  return collections.OrderedDict(
      train=tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
          x=examples.x, y=examples.y)).batch(8),
      client_index=tf.data.Dataset.from_tensors(np.int32(k)))


def test_duals_weight_the_aggregate():
  """Duals (0, 0, 10): mean 10/3, so only client 2 keeps a positive weight
  (1 + 10 - 10/3) and the round's model is client 2's local model."""
  data = _data()
  sgd = tff.learning.optimizers.build_sgdm(learning_rate=0.3)
  process = climb.build_climb(
      SPEC, sgd, tff.learning.optimizers.build_sgdm(learning_rate=1.0),
      NUM_CLIENTS)
  state = process.initialize()
  client_work = collections.OrderedDict(
      broadcast=np.array([0.0, 0.0, 10.0], np.float32),
      report=state.client_work['report'])
  state = tff.learning.templates.LearningAlgorithmState(
      global_model_weights=state.global_model_weights,
      distributor=state.distributor, client_work=client_work,
      aggregator=state.aggregator, finalizer=state.finalizer)
  inputs = [_client_inputs(data, k) for k in range(NUM_CLIENTS)]
  climb_weights = process.get_model_weights(process.next(state, inputs).state)

  alone = centralized.build_centralized(SPEC, sgd)
  alone_state = alone.next(alone.initialize(), [inputs[2]['train']]).state
  alone_weights = alone.get_model_weights(alone_state)
  for ours, theirs in zip(climb_weights.trainable, alone_weights.trainable):
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_registry_builds_climb_with_its_flags():
  config = registry.AlgorithmConfig(climb_epsilon=0.1, climb_dual_lr=0.1)
  context = registry.TaskContext(num_classes=NUM_CLASSES,
                                 num_clients=NUM_CLIENTS,
                                 train_class_counts=np.ones(NUM_CLASSES))
  process = registry.build_process('climb', SPEC, config, context)
  state = process.initialize()
  assert np.asarray(state.client_work['broadcast']).shape == (NUM_CLIENTS,)
  for flag, value in (('climb_epsilon', -1.0), ('climb_dual_lr', 0.0),
                      ('climb_max_dual', -2.0)):
    with pytest.raises(errors.UserInputError, match=f'--{flag}'):
      registry.AlgorithmConfig(**{flag: value})
