"""CLIMB: the dual update, the aggregation weights, and duals that move
(for every client of the population, or for the cohort only)."""

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
from tff_imbalance.learning.algorithms import fedavg_family
from tff_imbalance.learning.client_work import local_training
from tff_imbalance.models import spec as spec_lib

tff = compat.tff

NUM_CLASSES, NUM_CLIENTS = 4, 3
SPEC = spec_lib.ModelSpec('mlp', (6, 6, 1), NUM_CLASSES, seed=1)


def test_dual_update_matches_hand_computation():
  duals = np.array([0.0, 0.5, 1.0, 2.0], np.float32)
  # Clients 0, 1 and 3 were evaluated with losses 1.0, 2.0, 6.0 (mean 3.0).
  loss_sums = np.array([1.0, 2.0, 0.0, 6.0], np.float32)
  evaluated = np.array([1.0, 1.0, 0.0, 1.0], np.float32)
  new = climb.dual_update(duals, loss_sums, evaluated, epsilon=0.5,
                          dual_lr=2.0, max_dual=2.5)
  # lambda + 2 (l - 3 - 0.5) / 4 = (-1.25, -0.25, -, 3.25), clipped to
  # [0, 2.5]; client 2 was not evaluated and keeps its dual.
  np.testing.assert_allclose(new, [0.0, 0.0, 1.0, 2.5], atol=1e-6)
  inside = climb.dual_update(duals, loss_sums, evaluated, epsilon=0.5,
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
  """Three clients; client 2's labels disagree with its images.

  Class c lights row c of the image, so that one round fits the majority's
  mapping whatever order the local epochs visit the examples in (with a
  faint class signal the margin below depended on the batch order).
  """
  rng = np.random.default_rng(0)
  y = rng.integers(0, NUM_CLASSES, 90).astype(np.int64)
  x = rng.random((90, 6, 6, 1)).astype(np.float32) * 0.2
  x[np.arange(90), y] += 1.0
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
  assert runner.wants_population(process)
  state = process.initialize()
  for round_num in range(1, 3):
    duals = np.asarray(state.client_work['broadcast']['duals'])
    received = process.get_model_weights(state)
    inputs = data.round_inputs(range(NUM_CLIENTS), round_num=round_num,
                               local_epochs=5, batch_size=8, seed=0,
                               with_validation=False, with_population=True)
    output = process.next(state, inputs)
    state = output.state
    report = output.metrics['client_work']['round_report']['extension']
    # The constraint signal is the received model's loss on each client.
    expected_losses = [_mean_ce(received, data.pool, data.train_indices[k])
                       for k in range(NUM_CLIENTS)]
    np.testing.assert_allclose(report['loss_sums'], expected_losses,
                               rtol=1e-4)
    np.testing.assert_array_equal(report['evaluated'], np.ones(3))
    np.testing.assert_allclose(
        state.client_work['broadcast']['duals'],
        climb.dual_update(duals, report['loss_sums'], report['evaluated'],
                          epsilon=0.01, dual_lr=30.0, max_dual=100.0),
        rtol=1e-5)
  final_duals = np.asarray(state.client_work['broadcast']['duals'])
  # After one round the model fits clients 0 and 1, not client 2.
  assert report['loss_sums'][2] > 1.3 * max(report['loss_sums'][:2])
  assert final_duals[2] > 1.0
  assert final_duals[2] > 5 * max(final_duals[:2])


def _client_inputs(data, k):
  examples = data.pool.take(data.train_indices[k])
  dataset = tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
      x=examples.x, y=examples.y)).batch(8)
  return collections.OrderedDict(
      train=dataset, evaluation=dataset,
      client_index=tf.data.Dataset.from_tensors(np.int32(k)))


def test_duals_weight_the_aggregate():
  """Duals (0, 0, 10): mean 10/3, so only client 2 keeps a positive weight
  (1 + 10 - 10/3) and the round's model is client 2's local model."""
  data = _data()
  sgd = tff.learning.optimizers.build_sgdm(learning_rate=0.3)
  process = climb.build_climb(
      SPEC, sgd, tff.learning.optimizers.build_sgdm(learning_rate=1.0),
      NUM_CLIENTS)
  state = _with_duals(process.initialize(), [0.0, 0.0, 10.0])
  inputs = [_client_inputs(data, k) for k in range(NUM_CLIENTS)]
  climb_weights = process.get_model_weights(process.next(state, inputs).state)

  alone = centralized.build_centralized(SPEC, sgd)
  alone_state = alone.next(alone.initialize(), [inputs[2]['train']]).state
  alone_weights = alone.get_model_weights(alone_state)
  for ours, theirs in zip(climb_weights.trainable, alone_weights.trainable):
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_registry_builds_climb_with_its_flags():
  config = registry.AlgorithmConfig()
  options = climb.ClimbOptions(epsilon=0.1, dual_lr=0.1)
  context = registry.TaskContext(num_classes=NUM_CLASSES,
                                 num_clients=NUM_CLIENTS,
                                 train_class_counts=np.ones(NUM_CLASSES))
  process = registry.build_process('climb', SPEC, config, context, options)
  state = process.initialize()
  assert np.asarray(state.client_work['broadcast']['duals']).shape == (
      NUM_CLIENTS,)
  assert runner.wants_population(process)
  cohort_only = registry.build_process(
      'climb', SPEC, config, context, climb.ClimbOptions(duals='cohort'))
  assert runner.wants_client_index(cohort_only)
  assert not runner.wants_population(cohort_only)
  for field, value in (('epsilon', -1.0), ('dual_lr', 0.0),
                       ('max_dual', -2.0), ('duals', 'some'),
                       ('primal_rounds', 0)):
    with pytest.raises(errors.UserInputError, match=f'--climb_{field}'):
      climb.ClimbOptions(**{field: value})


def test_climb_with_zero_duals_is_fedavg():
  """With duals that cannot move (eta_D tiny) every multiplier is 1 and the
  aggregate is FedAvg's example-weighted mean; with duals it is not."""
  data = _data()
  sgd = tff.learning.optimizers.build_sgdm(learning_rate=0.3)
  server = tff.learning.optimizers.build_sgdm(learning_rate=1.0)
  inputs = [_client_inputs(data, k) for k in range(NUM_CLIENTS)]
  fedavg = fedavg_family.build_local_training_process(SPEC, sgd, server)
  final = {}
  for name, dual_lr in (('frozen', 1e-12), ('moving', 30.0)):
    process = climb.build_climb(SPEC, sgd, server, NUM_CLIENTS,
                                dual_lr=dual_lr)
    state = process.initialize()
    for _ in range(2):
      state = process.next(state, inputs).state
    final[name] = _flat(process.get_model_weights(state))
  state = fedavg.initialize()
  for _ in range(2):
    state = fedavg.next(state, [d['train'] for d in inputs]).state
  expected = _flat(fedavg.get_model_weights(state))
  np.testing.assert_allclose(final['frozen'], expected, atol=1e-6)
  assert not np.allclose(final['moving'], expected, atol=1e-3)


def _flat(weights):
  return np.concatenate([np.ravel(w) for w in weights.trainable])


def _with_duals(state, duals):
  """`state` with the duals replaced (the rest of the duals' state kept)."""
  broadcast = collections.OrderedDict(state.client_work['broadcast'])
  broadcast['duals'] = np.asarray(duals, np.float32)
  return local_training.with_broadcast(state, broadcast)


def _four_clients():
  """Four clients; clients 1 and 3 have labels that disagree with their
  images, so the four losses differ."""
  rng = np.random.default_rng(1)
  y = rng.integers(0, NUM_CLASSES, 48).astype(np.int64)
  x = (rng.random((48, 6, 6, 1)) * 0.2 + y[:, None, None, None] / 4).astype(
      np.float32)
  y[12:24] = (y[12:24] + 1) % NUM_CLASSES
  y[36:] = (y[36:] + 2) % NUM_CLASSES
  pool = arrays.LabeledArrays(x=x, y=y)
  return federated.build_federated_data(
      pool, np.array_split(np.arange(48), 4), NUM_CLASSES,
      validation_fraction=0.0, seed=0)


def _one_round(data, duals_scope, cohort, initial_duals, primal_rounds=1):
  process = climb.build_climb(
      SPEC, tff.learning.optimizers.build_sgdm(learning_rate=0.3),
      tff.learning.optimizers.build_sgdm(learning_rate=1.0), 4,
      epsilon=0.01, dual_lr=4.0, duals=duals_scope,
      primal_rounds=primal_rounds)
  state = _with_duals(process.initialize(), initial_duals)
  outputs = []
  for round_num in range(1, primal_rounds + 1):
    inputs = data.round_inputs(
        cohort, round_num=round_num, local_epochs=1, batch_size=4, seed=0,
        with_validation=False,
        with_client_index=runner.wants_client_index(process),
        with_population=runner.wants_population(process))
    outputs.append(process.next(state, inputs))
    state = outputs[-1].state
  return process, outputs


def test_all_duals_move_under_partial_participation():
  """N=4, cohort {0, 2}: with duals='all' every client's loss under the
  received model enters the dual step and every dual moves by the hand rule
  (mean over all four); with 'cohort' only the cohort's move (mean over
  the cohort). The model is the same: clients outside the cohort train on
  nothing and weigh 0."""
  data = _four_clients()
  initial = np.full([4], 0.5, np.float32)
  init_weights = climb.build_climb(
      SPEC, tff.learning.optimizers.build_sgdm(learning_rate=0.3),
      tff.learning.optimizers.build_sgdm(learning_rate=1.0), 4)
  init_weights = init_weights.get_model_weights(init_weights.initialize())
  losses_now = np.array([_mean_ce(init_weights, data.pool,
                                  data.train_indices[k]) for k in range(4)])
  assert np.ptp(losses_now) > 0.1  # The clients' losses differ.

  process, [output] = _one_round(data, 'all', [0, 2], initial)
  assert runner.wants_population(process)
  report = output.metrics['client_work']['round_report']['extension']
  np.testing.assert_allclose(report['loss_sums'], losses_now, rtol=1e-4)
  np.testing.assert_array_equal(report['evaluated'], np.ones(4))
  # Official rule: lambda + eta_D (l - mean_all l - eps) / N, in [0, 100].
  expected = np.clip(initial + 4.0 * (losses_now - losses_now.mean() - 0.01)
                     / 4, 0.0, 100.0)
  duals_all = np.asarray(output.state.client_work['broadcast']['duals'])
  np.testing.assert_allclose(duals_all, expected, rtol=1e-4)
  assert np.all(np.abs(duals_all - initial) > 1e-3)  # Every dual moved.
  train = output.metrics['client_work']['train']
  assert train['num_examples'] == sum(len(data.train_indices[k])
                                      for k in (0, 2))

  _, [cohort_output] = _one_round(data, 'cohort', [0, 2], initial)
  cohort_report = cohort_output.metrics['client_work']['round_report'][
      'extension']
  np.testing.assert_array_equal(cohort_report['evaluated'], [1, 0, 1, 0])
  cohort_losses = losses_now[[0, 2]]
  expected_cohort = initial.copy()
  expected_cohort[[0, 2]] = np.clip(
      0.5 + 4.0 * (cohort_losses - cohort_losses.mean() - 0.01) / 4, 0, 100)
  np.testing.assert_allclose(
      cohort_output.state.client_work['broadcast']['duals'], expected_cohort,
      rtol=1e-4)
  np.testing.assert_allclose(
      _flat(process.get_model_weights(output.state)),
      _flat(process.get_model_weights(cohort_output.state)), atol=1e-6)


def test_primal_rounds_hold_the_first_rounds_losses_for_one_dual_step():
  """P=2: the duals stay put after round 1 and move after round 2, by the
  losses measured at round 1 (the official n_p_steps); round 2 evaluates
  nothing."""
  data = _four_clients()
  initial = np.full([4], 0.5, np.float32)
  _, outputs = _one_round(data, 'all', [1, 3], initial, primal_rounds=2)
  first, second = [o.metrics['client_work']['round_report']['extension']
                   for o in outputs]
  np.testing.assert_array_equal(first['evaluated'], np.ones(4))
  np.testing.assert_array_equal(second['evaluated'], np.zeros(4))
  np.testing.assert_array_equal(second['loss_sums'], np.zeros(4))
  np.testing.assert_array_equal(
      outputs[0].state.client_work['broadcast']['duals'], initial)
  np.testing.assert_allclose(
      outputs[1].state.client_work['broadcast']['duals'],
      climb.dual_update(initial, first['loss_sums'], first['evaluated'],
                        epsilon=0.01, dual_lr=4.0, max_dual=100.0),
      rtol=1e-5)
  assert outputs[1].state.client_work['broadcast']['step'] == 0
