"""Algorithms end to end on tiny data: the skeleton, FedProx, the registry."""

import collections
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tff_imbalance import compat
from tff_imbalance import errors
from tff_imbalance import losses
from tff_imbalance.learning import options as options_lib
from tff_imbalance.learning import registry
from tff_imbalance.learning.algorithms import fedavg_family
from tff_imbalance.learning.client_work import local_training
from tff_imbalance.models import spec as spec_lib

tff = compat.tff

NUM_CLASSES = 4
SPEC = spec_lib.ModelSpec('mlp', (6, 6, 1), NUM_CLASSES, seed=3)
CONTEXT = registry.TaskContext(num_classes=NUM_CLASSES, num_clients=3,
                               train_class_counts=np.ones(NUM_CLASSES))


def _client_datasets(sizes=(12, 20, 7), seed=0):
  rng = np.random.default_rng(seed)
  datasets, labels = [], []
  for n in sizes:
    y = rng.integers(0, NUM_CLASSES, n).astype(np.int64)
    x = (rng.random((n, 6, 6, 1)) + y[:, None, None, None]).astype(np.float32)
    labels.append(y)
    datasets.append(tf.data.Dataset.from_tensor_slices(
        collections.OrderedDict(x=x, y=y)).repeat(2).batch(5))
  return datasets, labels


def _sgd(lr=0.1):
  return tff.learning.optimizers.build_sgdm(learning_rate=lr)


def _run_rounds(process, datasets, rounds=2):
  state = process.initialize()
  metrics = None
  for _ in range(rounds):
    output = process.next(state, datasets)
    state, metrics = output.state, output.metrics
  return process.get_model_weights(state), metrics


def _flat(weights):
  return np.concatenate([np.ravel(w) for w in weights.trainable])


def test_skeleton_fedavg_matches_tff_builtin_fedavg():
  datasets, _ = _client_datasets()
  ours, _ = _run_rounds(
      fedavg_family.build_local_training_process(SPEC, _sgd(), _sgd(1.0)),
      datasets)
  theirs, _ = _run_rounds(
      fedavg_family.build_tff_fedavg(SPEC, _sgd(), _sgd(1.0)), datasets)
  np.testing.assert_allclose(_flat(ours), _flat(theirs), atol=1e-5)


def test_skeleton_reports_train_metrics_and_round_label_counts():
  datasets, labels = _client_datasets()
  _, metrics = _run_rounds(
      fedavg_family.build_local_training_process(SPEC, _sgd(), _sgd(1.0)),
      datasets, rounds=1)
  client_metrics = metrics['client_work']
  # Each dataset is repeated twice, so every label is seen twice.
  expected = 2 * np.bincount(np.concatenate(labels), minlength=NUM_CLASSES)
  np.testing.assert_array_equal(
      client_metrics['round_report']['label_counts'], expected)
  assert client_metrics['train']['num_examples'] == 2 * sum(map(len, labels))
  assert 0.0 <= client_metrics['train']['accuracy'] <= 1.0


def _global_update_norm(mu):
  datasets, _ = _client_datasets(sizes=(40, 40), seed=5)
  process = fedavg_family.build_fedprox(SPEC, _sgd(0.05), _sgd(1.0), mu)
  state = process.initialize()
  before = _flat(process.get_model_weights(state))
  after = _flat(process.get_model_weights(process.next(state, datasets).state))
  return np.linalg.norm(after - before)


def test_fedprox_larger_mu_shrinks_the_update():
  norms = [_global_update_norm(mu) for mu in (0.0, 0.5, 5.0)]
  assert norms[0] > norms[1] > norms[2] > 0, norms


def test_fedprox_with_mu_zero_equals_fedavg():
  datasets, _ = _client_datasets()
  prox, _ = _run_rounds(fedavg_family.build_fedprox(SPEC, _sgd(), _sgd(1.0),
                                                    0.0), datasets)
  avg, _ = _run_rounds(
      fedavg_family.build_local_training_process(SPEC, _sgd(), _sgd(1.0)),
      datasets)
  np.testing.assert_allclose(_flat(prox), _flat(avg), atol=1e-6)


def test_plugin_broadcast_reaches_the_loss_and_reports_update_it():
  """A broadcast scale of 0 on the loss freezes the model; reports add up."""

  def scaled_ce(labels, logits, broadcast):
    return broadcast['scale'] * losses.cross_entropy(labels, logits)

  plugin = local_training.LocalLoopPlugin(
      initial_broadcast=lambda: collections.OrderedDict(
          scale=np.float32(0.0), clients_seen=np.float32(0.0)),
      prepare=lambda client: local_training.Preparation(
          report=tf.constant(1.0)),
      update_broadcast=lambda b, r: collections.OrderedDict(
          scale=b['scale'], clients_seen=b['clients_seen'] + r))
  process = fedavg_family.build_local_training_process(
      SPEC, _sgd(), _sgd(1.0), loss=scaled_ce, plugin=plugin)
  datasets, _ = _client_datasets()
  state = process.initialize()
  before = _flat(process.get_model_weights(state))
  for _ in range(2):
    state = process.next(state, datasets).state
  np.testing.assert_array_equal(_flat(process.get_model_weights(state)),
                                before)
  assert state.client_work['broadcast']['clients_seen'] == 6.0


@pytest.mark.parametrize('step_size', [0.0, 0.01])
def test_batch_loss_hands_its_step_values_to_after_step(step_size):
  """A zero loss leaves SGD idle; `after_step` moves the first variable by
  the value `batch_loss` returned for that step, once per step."""

  def batch_loss(model, batch, context, examples_seen):
    del context, examples_seen  # Unused.
    logits = model(batch['x'], training=True)
    return 0.0 * losses.cross_entropy(batch['y'], logits), logits, tf.constant(
        step_size)

  def after_step(model, gradients, context, step_value):
    del gradients, context  # Unused.
    model.trainable_variables[0].assign_sub(
        tf.fill(tf.shape(model.trainable_variables[0]), step_value))

  plugin = local_training.LocalLoopPlugin(
      initial_broadcast=lambda: np.float32(0.0), batch_loss=batch_loss,
      after_step=after_step)
  process = fedavg_family.build_local_training_process(
      SPEC, _sgd(), _sgd(1.0), plugin=plugin)
  datasets, _ = _client_datasets()  # 24, 40, 14 examples in 5, 8, 3 steps.
  state = process.initialize()
  before = process.get_model_weights(state).trainable
  after = process.get_model_weights(process.next(state, datasets).state
                                   ).trainable
  mean_steps = (24 * 5 + 40 * 8 + 14 * 3) / 78
  np.testing.assert_allclose(after[0], before[0] - step_size * mean_steps,
                             atol=1e-6)
  for moved, start in zip(after[1:], before[1:]):
    np.testing.assert_array_equal(moved, start)


@pytest.mark.parametrize('name', ['fedavgm', 'fedadam'])
def test_registered_server_optimizers_run_and_move_the_model(name):
  process = registry.build_process(name, SPEC, registry.AlgorithmConfig(),
                                   CONTEXT)
  datasets, _ = _client_datasets()
  state = process.initialize()
  before = _flat(process.get_model_weights(state))
  after = _flat(process.get_model_weights(process.next(state, datasets).state))
  assert np.all(np.isfinite(after)) and not np.allclose(before, after)


def test_unknown_algorithm_names_the_flag_and_the_choices():
  with pytest.raises(errors.UserInputError, match='--algo must be one of'):
    registry.build_process('fedsomething', SPEC, registry.AlgorithmConfig(),
                           CONTEXT)


@pytest.mark.parametrize('kwargs, flag', [
    (dict(client_lr=0.0), '--client_lr'),
    (dict(server_lr=-1.0), '--server_lr'),
    (dict(client_momentum=1.0), '--client_momentum'),
])
def test_bad_hyperparameters_name_their_flag(kwargs, flag):
  with pytest.raises(errors.UserInputError, match=flag):
    registry.AlgorithmConfig(**kwargs)


@pytest.mark.parametrize('name, flag, value', [
    ('fedavgm', 'server_momentum', 1.0),
    ('fedprox', 'fedprox_mu', -0.1),
    ('fedadam', 'adam_beta2', 1.0),
    ('fedadam', 'adam_epsilon', 0.0),
])
def test_bad_method_options_name_their_flag(name, flag, value):
  with pytest.raises(errors.UserInputError, match=f'--{flag} '):
    registry.make_options(name, **{flag: value})


def test_options_of_another_method_are_refused_by_name():
  with pytest.raises(TypeError, match='climb_epsilon'):
    registry.make_options('fedavg', climb_epsilon=0.1)


def test_every_option_flag_belongs_to_one_method_but_psi():
  owners = collections.defaultdict(list)
  fields = collections.defaultdict(list)
  for name, options_class in registry.options_classes():
    for flag, field in options_lib.flag_fields(options_class):
      owners[flag].append(name)
      fields[flag].append(field)
  # Fed-Focal's psi selection runs on FedAvg and on VIRTUAL (000): one flag,
  # one type and choices, each method its own default.
  shared_by_two = {flag: methods for flag, methods in owners.items()
                   if len(methods) > 1}
  assert shared_by_two == {'psi': ['fedfocal', 'virtual'],
                           'psi_improvement': ['fedfocal', 'virtual']}
  for flag in shared_by_two:
    first, second = fields[flag]
    assert type(first.default) is type(second.default)
    assert first.metadata['choices'] == second.metadata['choices']
  shared = {f.name for f in dataclasses.fields(registry.AlgorithmConfig)}
  assert owners and not shared & set(owners)


@pytest.mark.parametrize('name', ['fedavg', 'fedavgm', 'fedadam', 'fedprox'])
def test_focal_loss_plugs_into_every_fedavg_family_algorithm(name):
  datasets, _ = _client_datasets()
  weights = {}
  for loss in ('ce', 'focal'):
    process = registry.build_process(
        name, SPEC, registry.AlgorithmConfig(loss=loss, focal_gamma=2.0),
        CONTEXT)
    weights[loss] = _flat(_run_rounds(process, datasets, rounds=1)[0])
  assert np.all(np.isfinite(weights['focal']))
  assert not np.allclose(weights['ce'], weights['focal'])


def test_unknown_loss_names_the_flag():
  with pytest.raises(errors.UserInputError, match='--loss'):
    registry.AlgorithmConfig(loss='hinge')


def test_validation_slots_report_each_clients_losses_in_its_slot():
  datasets, _ = _client_datasets(sizes=(30, 30, 30), seed=2)
  validation, _ = _client_datasets(sizes=(10, 10, 10), seed=7)
  process = fedavg_family.build_local_training_process(
      SPEC, _sgd(0.1), _sgd(1.0), validation_slots=3)
  slot = lambda k: tf.data.Dataset.from_tensors(np.int32(k))
  data = [collections.OrderedDict(train=d, validation=v, slot=slot(k))
          for k, (d, v) in enumerate(zip(datasets, validation))]
  # The slot order is the cohort order: swapping two clients swaps slots.
  swapped = [collections.OrderedDict(data[1], slot=slot(0)),
             collections.OrderedDict(data[0], slot=slot(1)), data[2]]
  state = process.initialize()
  report = process.next(state, data).metrics['client_work']['round_report']
  report_swapped = process.next(
      state, swapped).metrics['client_work']['round_report']
  before, after = (report['validation_loss_before'],
                   report['validation_loss_after'])
  assert before.shape == (3,) and np.all(before > 0) and np.all(after > 0)
  np.testing.assert_allclose(report_swapped['validation_loss_before'],
                             before[[1, 0, 2]], rtol=1e-5)
  # Every client starts from the same model, so "before" is the plain loss of
  # that model on each client's validation data.
  model = SPEC.build_keras()
  process.get_model_weights(state).assign_weights_to(model)
  for k, v in enumerate(validation):
    batches = list(v)
    expected = np.mean(np.concatenate([
        losses.cross_entropy(b['y'], model(b['x'])).numpy() for b in batches]))
    np.testing.assert_allclose(before[k], expected, rtol=1e-5)


def _registry_weights(name, config, datasets, rounds, options=None):
  """The global weights after each of `rounds` rounds, the initial first."""
  process = registry.build_process(name, SPEC, config, CONTEXT, options)
  state = process.initialize()
  weights = [_flat(process.get_model_weights(state))]
  for _ in range(rounds):
    state = process.next(state, datasets).state
    weights.append(_flat(process.get_model_weights(state)))
  return process, state, weights


def test_fedavgm_with_momentum_zero_is_fedavg():
  datasets, _ = _client_datasets()
  config = registry.AlgorithmConfig()
  _, _, fedavgm = _registry_weights(
      'fedavgm', config, datasets, 2,
      fedavg_family.FedAvgMOptions(momentum=0.0))
  _, _, fedavg = _registry_weights('fedavg', config, datasets, 2)
  np.testing.assert_array_equal(fedavgm[-1], fedavg[-1])


def test_fedavgm_second_round_adds_momentum_times_the_first_update():
  """Server SGD with momentum beta and lr 1: v_1 = Delta_1, w_1 = w_0 - v_1;
  v_2 = beta v_1 + Delta_2, w_2 = w_1 - v_2, where Delta_2 is the FedAvg
  update from w_1."""
  beta = 0.9
  datasets, _ = _client_datasets()
  config = registry.AlgorithmConfig()
  _, _, (w0, w1, w2) = _registry_weights(
      'fedavgm', config, datasets, 2,
      fedavg_family.FedAvgMOptions(momentum=beta))
  fedavg = registry.build_process('fedavg', SPEC, config, CONTEXT)
  state = fedavg.next(fedavg.initialize(), datasets).state
  np.testing.assert_allclose(_flat(fedavg.get_model_weights(state)), w1,
                             atol=1e-6)  # v_0 = 0: round 1 is FedAvg's.
  # Delta_2: FedAvg's update from w_1 (the round-1 model, equal above).
  from_w1 = _flat(fedavg.get_model_weights(fedavg.next(state, datasets).state))
  delta_1, delta_2 = w0 - w1, w1 - from_w1
  np.testing.assert_allclose(w2, w1 - (beta * delta_1 + delta_2), atol=1e-5)
  assert np.linalg.norm(beta * delta_1) > 10 * 1e-5 * np.sqrt(w2.size)


def test_fedadam_first_round_is_a_hand_computed_adam_step():
  """Adam on the pseudo-gradient g = w_0 - FedAvg(w_0): a = (1 - b1) g,
  p = (1 - b2) g^2, w_1 = w_0 - lr sqrt(1 - b2) / (1 - b1) a / (sqrt(p) +
  eps) (TFF's bias-corrected form)."""
  datasets, _ = _client_datasets()
  config = registry.AlgorithmConfig()  # FedAvg's server lr 1, Adam's 0.01.
  _, _, (w0, fedavg_w1) = _registry_weights('fedavg', config, datasets, 1)
  _, _, (_, adam_w1) = _registry_weights('fedadam', config, datasets, 1)
  g = w0 - fedavg_w1
  adam = fedavg_family.FedAdamOptions()
  b1, b2, eps = adam.beta1, adam.beta2, adam.epsilon
  a, p = (1 - b1) * g, (1 - b2) * g * g
  expected = w0 - 0.01 * np.sqrt(1 - b2) / (1 - b1) * a / (np.sqrt(p) + eps)
  np.testing.assert_allclose(adam_w1, expected, rtol=1e-4, atol=1e-6)
  assert not np.allclose(adam_w1, fedavg_w1, atol=1e-4)


def test_inapplicable_flags_follow_the_method_and_its_options():
  """A method's flags apply to it alone, psi's reading only with psi > 0;
  shared loss flags follow the method's local loss."""
  config = registry.AlgorithmConfig()
  flags_set = ['psi', 'psi_improvement', 'climb_epsilon', 'focal_gamma',
               'loss', 'client_lr']
  assert registry.inapplicable_flags(
      'fedfocal', config, registry.make_options('fedfocal', psi=0.0),
      flags_set) == [
          ('psi_improvement', '--algo=fedfocal with --psi > 0'),
          ('climb_epsilon', '--algo=climb'),
          ('loss', '--algo=centralized,climb,fedadam,fedavg,fedavgm,fedprox,'
           'local,virtual')]
  assert [flag for flag, _ in registry.inapplicable_flags(
      'climb', config, None, flags_set)] == ['psi', 'psi_improvement',
                                             'focal_gamma']
