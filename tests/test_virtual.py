"""VIRTUAL (Corinzia et al. 2019; 000's testbed): the math by hand, the
server's bookkeeping, both within-round orders, and its composition with
Fed-Focal's loss and psi selection."""

import numpy as np
import pytest
import tensorflow as tf

from tff_imbalance import errors
from tff_imbalance import runner
from tff_imbalance import runtime
from tff_imbalance.data import arrays
from tff_imbalance.data import federated
from tff_imbalance.learning import registry
from tff_imbalance.learning import selection
from tff_imbalance.learning.algorithms import virtual
from tff_imbalance.models import builders
from tff_imbalance.models import spec as spec_lib

NUM_CLASSES = 3
# A linear model (Flatten + Dense classifier): the hand computations below.
LINEAR = spec_lib.as_model_spec(
    lambda: builders.build_mlp((2, 2, 1), NUM_CLASSES, 0, hidden=()))
MLP = spec_lib.ModelSpec('mlp100', (2, 2, 1), NUM_CLASSES, seed=0)


def _data(num_clients, examples=48, validation_fraction=0.0):
  rng = np.random.default_rng(0)
  y = rng.integers(0, NUM_CLASSES, examples).astype(np.int64)
  x = (rng.random((examples, 2, 2, 1)) * 0.5 +
       y[:, None, None, None] / 2).astype(np.float32)
  parts = np.array_split(np.arange(examples), num_clients)
  return federated.build_federated_data(
      arrays.LabeledArrays(x=x, y=y), parts, NUM_CLASSES,
      validation_fraction=validation_fraction, seed=0)


def _sizes(data):
  return np.array([len(part) for part in data.client_train_partition()])


def _inputs(data, cohort, round_num, batch_size=100, local_epochs=1):
  return data.round_inputs(cohort, round_num=round_num,
                           local_epochs=local_epochs, batch_size=batch_size,
                           seed=0, with_validation=False,
                           with_client_index=True)


def _natural(values):
  return [np.asarray(v, np.float64) for v in values]


def test_natural_kl_is_the_gaussian_kl():
  # q = N(1, 1/4), p = N(0, 1): 1/2 (1/4 + 1 - 1 + log 4).
  kl = virtual.natural_kl(tf.constant([4.0]), tf.constant([4.0]),
                          tf.constant([0.0]), tf.constant([1.0]))
  np.testing.assert_allclose(kl, 0.5 * (0.25 + np.log(4.0)), rtol=1e-6)
  rng = np.random.default_rng(1)
  mean_q, mean_p = rng.normal(size=5), rng.normal(size=5)
  std_q, std_p = rng.uniform(0.2, 2, 5), rng.uniform(0.2, 2, 5)
  # log(s_p / s_q) + (s_q^2 + (m_q - m_p)^2) / (2 s_p^2) - 1/2, per weight.
  expected = np.sum(np.log(std_p / std_q) + (std_q**2 + (mean_q - mean_p)**2)
                    / (2 * std_p**2) - 0.5)
  got = virtual.natural_kl(
      *[tf.constant(v, tf.float32) for v in (
          mean_q / std_q**2, 1 / std_q**2, mean_p / std_p**2, 1 / std_p**2)])
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_the_server_starts_at_the_weighted_product_of_client_factors():
  data = _data(4)
  sizes = _sizes(data)
  process = virtual.build_virtual(LINEAR, sizes, clients_per_round=2)
  state = process.initialize()
  weights = sizes / sizes.sum()
  for name in ('gamma', 'precision'):
    for total, factors in zip(state[name], state[f'factors_{name}']):
      np.testing.assert_allclose(total, np.tensordot(weights, factors, 1),
                                 rtol=1e-5)
  # The reference's draw: sigma = softplus(u), u ~ N(-4.85, 0.45).
  precision = np.concatenate([f.ravel() for f in state['factors_precision']])
  sigma = 1 / np.sqrt(precision)
  np.testing.assert_allclose(np.median(np.log(np.expm1(sigma))), -4.85,
                             atol=0.1)
  # The exposed model is the posterior mean.
  means = process.get_model_weights(state).trainable
  for mean, gamma, prec in zip(means, state['gamma'], state['precision']):
    np.testing.assert_allclose(mean, gamma / prec, rtol=1e-6)


def _client_step_by_hand(state, k, sizes, batch, options, server_lr):
  """One local step of client k from `state` (its whole data in one batch)."""
  weight = sizes[k] / sizes.sum()
  gamma_s = [tf.constant(v) for v in state['gamma']]
  precision_s = [tf.constant(v) for v in state['precision']]
  old_gamma = [tf.constant(f[k]) for f in state['factors_gamma']]
  old_precision = [tf.constant(f[k]) for f in state['factors_precision']]
  cavity_gamma = [s - weight * c for s, c in zip(gamma_s, old_gamma)]
  cavity_precision = [s - weight * c
                      for s, c in zip(precision_s, old_precision)]
  t_gamma = [tf.Variable(c) for c in old_gamma]
  t_precision = [tf.Variable(c) for c in old_precision]
  with tf.GradientTape() as tape:
    q_gamma = [c + weight * t for c, t in zip(cavity_gamma, t_gamma)]
    q_precision = [c + weight * t
                   for c, t in zip(cavity_precision, t_precision)]
    kernel, bias = virtual.sample_weights(
        q_gamma, q_precision, virtual.sample_seed(0, 0, k, 0))
    logits = tf.reshape(batch['x'], [-1, 4]) @ kernel + bias
    data_loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        batch['y'], logits))
    prior_precision = [c + weight * options.prior_precision
                       for c in cavity_precision]
    kl = sum(virtual.natural_kl(qg, qp, cg, pp) for qg, qp, cg, pp in zip(
        q_gamma, q_precision, cavity_gamma, prior_precision))
    objective = data_loss + options.kl_weight * kl / sizes[k]
  grads = tape.gradient(objective, t_gamma + t_precision)
  step = options.natural_lr / weight
  new_t = [t - step * g for t, g in zip(t_gamma + t_precision, grads)]
  count = len(t_gamma)
  # The reference's NonNegPrec: a factor precision below 1e-6 becomes 0.
  new_t[count:] = [tf.where(t >= virtual.PRECISION_FLOOR, t, 0.0)
                   for t in new_t[count:]]
  damping = options.damping_for(server_lr)
  deltas = [damping * (t - c).numpy()
            for t, c in zip(new_t, old_gamma + old_precision)]
  return weight, deltas


def test_one_round_is_the_natural_gradient_step_by_hand():
  # Client 1 of 3 alone (w_1 = 16/48), one batch of all its examples: the
  # cavity, the KL to the cavity-times-prior, the step alpha / w_1, the
  # damping 1 - eta_s and the server's eta_s w_1 delta, all by hand.
  runtime.set_local_execution_context()
  data = _data(3)
  sizes = _sizes(data)
  options = virtual.VirtualOptions(natural_lr=2e7, kl_weight=0.3,
                                   prior_precision=2.0)
  process = virtual.build_virtual(LINEAR, sizes, clients_per_round=1,
                                  server_lr=0.4, options=options)
  state = process.initialize()
  inputs = _inputs(data, [1], round_num=0)
  batch = next(iter(inputs[0]['train']))
  weight, deltas = _client_step_by_hand(state, 1, sizes, batch, options, 0.4)
  new = process.next(state, inputs).state
  count = len(state['gamma'])
  for name, part in (('gamma', deltas[:count]), ('precision', deltas[count:])):
    for old, got, delta in zip(state[name], new[name], part):
      np.testing.assert_allclose(got - old, 0.4 * weight * delta, rtol=2e-3,
                                 atol=1e-3 * np.abs(delta).max())
    for old, got, delta in zip(state[f'factors_{name}'],
                               new[f'factors_{name}'], part):
      np.testing.assert_allclose(got[1] - old[1], delta, rtol=2e-3,
                                 atol=1e-3 * np.abs(delta).max())
      np.testing.assert_array_equal(got[[0, 2]], old[[0, 2]])
  assert np.any(np.abs(deltas[0]) > 0)


def test_one_client_with_a_flat_prior_is_variational_training():
  # One client (w = 1): the cavity s - t is empty, so q = t and p is the
  # prior; with eta_s = 1 and no damping the server adopts q. Two rounds of
  # VIRTUAL are then two epochs of natural-parameter SGD on the client's
  # negative ELBO (a nearly flat prior: lambda_0 = 1e-3), written here as a
  # plain loop over the same batches and weight draws.
  runtime.set_local_execution_context()
  data = _data(1, examples=24)
  sizes = _sizes(data)
  options = virtual.VirtualOptions(natural_lr=3e6, kl_weight=1.0, damping=1.0,
                                   prior_precision=1e-3)
  process = virtual.build_virtual(LINEAR, sizes, clients_per_round=1,
                                  server_lr=1.0, options=options)
  state = process.initialize()
  gamma = [tf.constant(v) for v in state['gamma']]
  precision = [tf.constant(v) for v in state['precision']]
  for round_num in range(2):
    inputs = _inputs(data, [0], round_num, batch_size=8)
    for step, batch in enumerate(inputs[0]['train']):
      variables = [tf.Variable(v) for v in gamma + precision]
      with tf.GradientTape() as tape:
        g, p = variables[:2], variables[2:]
        kernel, bias = virtual.sample_weights(
            g, p, virtual.sample_seed(0, round_num, 0, step))
        logits = tf.reshape(batch['x'], [-1, 4]) @ kernel + bias
        objective = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(batch['y'],
                                                           logits))
        objective += sum(virtual.natural_kl(
            gi, pi, tf.zeros_like(gi), tf.fill(tf.shape(pi), 1e-3))
                         for gi, pi in zip(g, p)) / sizes[0]
      grads = tape.gradient(objective, variables)
      updated = [v - 3e6 * d for v, d in zip(variables, grads)]
      gamma, precision = updated[:2], updated[2:]
    state = process.next(state, inputs).state
  for got, want in zip(state['gamma'] + state['precision'], gamma + precision):
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-6 * np.abs(
        want).max())
  assert not np.allclose(state['gamma'][0],
                         process.initialize()['gamma'][0])


@pytest.mark.parametrize('refinement', [virtual.PARALLEL, virtual.SEQUENTIAL])
def test_the_server_adds_exactly_the_cohort_factors_changes(refinement):
  runtime.set_local_execution_context()
  data = _data(4)
  sizes = _sizes(data)
  options = virtual.VirtualOptions(natural_lr=1e7, refinement=refinement)
  process = virtual.build_virtual(MLP, sizes, clients_per_round=2,
                                  server_lr=0.5, options=options)
  state = process.initialize()
  output = process.next(state, _inputs(data, [3, 1], 0, batch_size=8))
  new = output.state
  weights = sizes / sizes.sum()
  for name in ('gamma', 'precision'):
    for old, got, old_rows, new_rows in zip(
        state[name], new[name], state[f'factors_{name}'],
        new[f'factors_{name}']):
      changes = new_rows - old_rows
      # float32 sums of terms of the state's size: a few ulps of it.
      np.testing.assert_allclose(
          got - old, 0.5 * np.tensordot(weights, changes, 1), rtol=1e-4,
          atol=4 * np.finfo(np.float32).eps * np.abs(old_rows).max())
      # Only the cohort's factors move.
      assert np.abs(changes[[1, 3]]).max() > 0
      np.testing.assert_array_equal(changes[[0, 2]], 0.0)
  # Every cohort client trains once, in either order.
  assert output.metrics['client_work']['train']['num_examples'] == (
      sizes[1] + sizes[3])


def test_sequential_clients_start_from_the_refined_posterior():
  runtime.set_local_execution_context()
  data = _data(4)
  sizes = _sizes(data)

  def final_state(refinement, cohort):
    process = virtual.build_virtual(
        MLP, sizes, clients_per_round=len(cohort), server_lr=0.5,
        options=virtual.VirtualOptions(natural_lr=1e7, refinement=refinement))
    return process.next(process.initialize(),
                        _inputs(data, cohort, 0, batch_size=8)).state

  # One client: the two orders are one computation.
  for a, b in zip(final_state(virtual.PARALLEL, [2])['gamma'],
                  final_state(virtual.SEQUENTIAL, [2])['gamma']):
    np.testing.assert_array_equal(a, b)
  parallel = final_state(virtual.PARALLEL, [0, 2])
  sequential = final_state(virtual.SEQUENTIAL, [0, 2])
  # Client 0 goes first in both; client 2 sees client 0's refinement only
  # when sequential.
  np.testing.assert_array_equal(parallel['factors_gamma'][0][0],
                                sequential['factors_gamma'][0][0])
  assert not np.allclose(parallel['factors_gamma'][0][2],
                         sequential['factors_gamma'][0][2])


def test_focal_gamma_zero_is_cross_entropy_and_gamma_two_is_not():
  runtime.set_local_execution_context()
  data = _data(3)
  context = registry.TaskContext(
      num_classes=NUM_CLASSES, num_clients=3,
      train_class_counts=np.ones(NUM_CLASSES), client_sizes=_sizes(data))
  options = registry.make_options('virtual', virtual_natural_lr=1e7)

  def gamma_after_round(**loss):
    config = registry.AlgorithmConfig(clients_per_round=2, **loss)
    process = registry.build_process('virtual', MLP, config, context, options)
    return process.next(process.initialize(),
                        _inputs(data, [0, 2], 0, batch_size=8)).state['gamma']

  ce = gamma_after_round()
  # Focal loss computes -log p_t its own way: equal to float32 rounding.
  for a, b in zip(ce, gamma_after_round(loss='focal', focal_gamma=0.0)):
    np.testing.assert_allclose(a, b, rtol=1e-5)
  assert not np.allclose(ce[0], gamma_after_round(loss='focal',
                                                  focal_gamma=2.0)[0],
                         rtol=1e-3)


def test_virtual_with_focal_loss_and_psi_selection_end_to_end():
  # 000 table 3's Virtual(FFL): --algo=virtual --loss=focal --psi=0.8.
  runtime.set_local_execution_context()
  data = _data(6, examples=120, validation_fraction=0.25)
  config = registry.AlgorithmConfig(loss='focal', clients_per_round=3,
                                    batch_size=8)
  options = registry.make_options('virtual', psi=0.8, virtual_natural_lr=1e7)
  context = registry.TaskContext(
      num_classes=NUM_CLASSES, num_clients=6,
      train_class_counts=np.ones(NUM_CLASSES), client_sizes=_sizes(data))
  process = registry.build_process('virtual', MLP, config, context, options)
  selector = registry.build_selector('virtual', config, data, 3, seed=0,
                                     model_spec=MLP, options=options)
  assert isinstance(selector, selection.PsiSelector)
  reports = []
  observe = selector.observe_round

  def recording_observe(round_num, cohort, measurements, model_weights):
    reports.append(measurements['client_work']['round_report'])
    observe(round_num, cohort, measurements, model_weights)

  selector.observe_round = recording_observe
  summary = runner.run(
      process, data, selector,
      lambda weights: dict.fromkeys(runner.SCALAR_EVAL_KEYS, 0.0),
      runner.RunConfig(rounds=3, local_epochs=1, batch_size=8, eval_every=3,
                       seed=0, quiet=True))
  assert summary['rounds'] == 3 and len(reports) == 3
  for report in reports:
    # Every slot reports a loss before and after its training.
    assert np.all(np.asarray(report['validation_loss_before']) > 0)
    assert np.all(np.asarray(report['validation_loss_after']) > 0)
  fraction = selector.summary()['local_improved_fraction']
  assert fraction is not None and 0.0 <= fraction <= 1.0


def test_psi_serves_fedfocal_and_virtual_with_their_own_defaults():
  assert registry.make_options('virtual').psi == 0.0
  assert registry.make_options('fedfocal').psi == 0.8
  config = registry.AlgorithmConfig()
  for algo in ('fedfocal', 'virtual'):
    assert not registry.inapplicable_flags(algo, config, None, ['psi'])
  assert registry.inapplicable_flags('fedavg', config, None, ['psi']) == [
      ('psi', '--algo=fedfocal or --algo=virtual')]
  # VIRTUAL steps its natural parameters by --virtual_natural_lr.
  assert [flag for flag, _ in registry.inapplicable_flags(
      'virtual', config, None, ['client_lr', 'client_momentum', 'server_lr'])
         ] == ['client_lr', 'client_momentum']


def test_a_model_other_than_dense_layers_stops_with_one_line():
  data = _data(2)
  with pytest.raises(errors.UserInputError, match='--model=mlp'):
    virtual.build_virtual(spec_lib.ModelSpec('cnn', (28, 28, 1), 10, seed=0),
                          _sizes(data), clients_per_round=1)
  context = registry.TaskContext(num_classes=NUM_CLASSES, num_clients=2,
                                 train_class_counts=np.ones(NUM_CLASSES))
  with pytest.raises(errors.UserInputError, match='client_sizes'):
    registry.build_process('virtual', MLP, registry.AlgorithmConfig(),
                           context)


@pytest.mark.parametrize('field, value', [
    ('natural_lr', 0.0), ('kl_weight', -1.0), ('damping', 1.5),
    ('prior_precision', 0.0), ('loc_init_std', -1.0), ('scale_init', (1.0,)),
    ('refinement', 'random')])
def test_bad_options_name_the_flag(field, value):
  with pytest.raises(errors.UserInputError, match=f'--virtual_{field}'):
    virtual.VirtualOptions(**{field: value})
