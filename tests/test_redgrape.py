"""RedGrape (004): prototypes, balanced set, eqs. 12-13, end to end."""

import collections

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
from tff_imbalance.learning.algorithms import fedavg_family
from tff_imbalance.learning.algorithms import redgrape
from tff_imbalance.models import spec as spec_lib
from tff_imbalance.models import two_stream

NUM_CLASSES, NUM_CLIENTS = 4, 3
SPEC = spec_lib.ModelSpec('mlp', (6, 6, 1), NUM_CLASSES, seed=0)


def test_closed_form_class_gradients_match_autodiff():
  rng = np.random.default_rng(0)
  features = tf.constant(rng.normal(size=(7, 5)), tf.float32)
  labels = tf.constant([0, 0, 2, 2, 2, 1, 0], tf.int64)
  # Four classes, of which class 3 has no example.
  kernel = tf.Variable(rng.normal(size=(5, 4)), dtype=tf.float32)
  bias = tf.Variable(rng.normal(size=(4,)), dtype=tf.float32)
  got = classifier_gradients.class_mean_gradients(features, labels, kernel,
                                                  bias, 4)
  for c in range(3):
    members = labels == c
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(
          tf.keras.losses.sparse_categorical_crossentropy(
              labels[members], tf.boolean_mask(features, members) @ kernel +
              bias, from_logits=True))
    g_kernel, g_bias = tape.gradient(loss, [kernel, bias])
    np.testing.assert_allclose(got['values']['kernel'][c], g_kernel,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got['values']['bias'][c], g_bias, rtol=1e-5,
                               atol=1e-6)
  np.testing.assert_array_equal(got['mask'], [1, 1, 1, 0])
  np.testing.assert_array_equal(got['values']['kernel'][3], 0.0)
  np.testing.assert_array_equal(got['values']['bias'][3], 0.0)


def test_balanced_set_takes_first_t_of_each_class_held_t_times():
  labels = np.array([2, 0, 2, 1, 2, 0, 2], np.int64)
  x = (np.arange(7) + 100 * labels)[:, None].astype(np.float32)
  dataset = tf.data.Dataset.from_tensor_slices(
      collections.OrderedDict(x=x, y=labels)).repeat(2).batch(3)
  balanced = redgrape.select_balanced_set(dataset, 3, threshold=2,
                                               local_epochs=2, input_shape=(1,))
  # Class 0 (2 examples) and 2 (4) reach T=2; class 1 (1 example) does not,
  # though the repeated dataset shows it twice.
  np.testing.assert_array_equal(balanced['eligible'], [1, 0, 1])
  np.testing.assert_array_equal(balanced['y'], [0, 0, 1, 1, 2, 2])
  np.testing.assert_array_equal(balanced['x'][:, 0],
                                [1, 5, 103, 103, 200, 202])


def test_rebalancing_gradient_mixes_real_and_prototypes_eq12_and_eq13():
  local = collections.OrderedDict(kernel=tf.constant([[1.0], [2.0], [3.0]]),
                                  bias=tf.constant([[1.0], [1.0], [1.0]]))
  prototypes = collections.OrderedDict(
      values=collections.OrderedDict(
          kernel=tf.constant([[10.0], [20.0], [30.0]]),
          bias=tf.constant([[5.0], [5.0], [0.0]])),
      mask=tf.constant([1.0, 1.0, 0.0]))
  g_bal = redgrape.rebalancing_gradients(
      local, tf.constant([1.0, 0.0, 0.0]), prototypes, 3)
  # Class 0 real, class 1 from its prototype, class 2 has neither.
  np.testing.assert_allclose(g_bal['kernel'], [(1 + 20) / 3])
  np.testing.assert_allclose(g_bal['bias'], [(1 + 5) / 3])
  scaled = redgrape._norm_matched(tf.constant([3.0, 4.0]),
                                       tf.constant([0.0, 0.5]))
  np.testing.assert_allclose(scaled, [0.3, 0.4], rtol=1e-6)


def test_norm_matching_is_one_norm_over_kernel_and_bias():
  g_bal = collections.OrderedDict(kernel=tf.constant([3.0, 0.0]),
                                  bias=tf.constant([4.0]))
  g_local = collections.OrderedDict(kernel=tf.constant([0.0, 10.0]),
                                    bias=tf.constant([0.0]))
  scaled = redgrape._norm_matched(g_bal, g_local)
  # ||g_bal|| = 5 and ||g_local|| = 10 over W as one vector: g_bal doubles,
  # direction kept (per tensor, the bias would be scaled to 0).
  np.testing.assert_allclose(scaled['kernel'], [6.0, 0.0], rtol=1e-6)
  np.testing.assert_allclose(scaled['bias'], [8.0], rtol=1e-6)


def _mean_ce_gradients(model, x, y):
  with tf.GradientTape() as tape:
    loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
        y, model(x), from_logits=True))
  return tape.gradient(loss, model.trainable_variables)


def _classifier_gradient(model, x, y):
  """Mean CE gradient of W = (kernel, bias) alone, features held fixed."""
  return [g.numpy() for g in _mean_ce_gradients(model, x, y)[-2:]]


def _rebalancing_gradient(model, x, y, eligible):
  # Eq. 12 in round 1: (1/C) sum over the eligible classes, no prototypes.
  parts = [_classifier_gradient(model, x[y == c], y[y == c])
           for c in eligible]
  return [sum(p[i] for p in parts) / NUM_CLASSES for i in range(2)]


def _norm(tensors):
  return np.sqrt(sum(np.sum(t.astype(np.float64) ** 2) for t in tensors))


def test_one_step_rebalances_at_the_pre_step_parameters_eq9_eq13(runs):
  # One client, one batch, plain SGD, round 1: classes 0 and 1 reach T = 3,
  # class 2 (one example) and class 3 (none) do not and have no prototype.
  rng = np.random.default_rng(1)
  y = np.array([0, 1, 0, 2, 1, 0, 1], np.int64)
  x = (rng.random((7, 6, 6, 1)) + y[:, None, None, None]).astype(np.float32)
  lr, strength = 0.1, 0.1  # _CONFIG, _options(0.1): the process of `runs`.
  process = runs['process']
  state = process.initialize()
  model = SPEC.build_keras()
  process.get_model_weights(state).assign_weights_to(model)
  dataset = tf.data.Dataset.from_tensor_slices(
      collections.OrderedDict(x=x, y=y)).batch(8)
  got = process.get_model_weights(process.next(state, [dataset]).state)

  # W_hat starts at zero: the two-stream step is the plain model's CE step.
  initial = [v.numpy() for v in model.trainable_variables]
  g_local = [g.numpy() for g in _mean_ce_gradients(model, x, y)]
  stepped = [w - lr * g for w, g in zip(initial, g_local)]
  g_bal_pre = _rebalancing_gradient(model, x, y, eligible=(0, 1))
  for variable, value in zip(model.trainable_variables, stepped):
    variable.assign(value)
  g_bal_post = _rebalancing_gradient(model, x, y, eligible=(0, 1))

  def rebalanced(g_bal, per_tensor=False):
    return [w - lr * strength * g * (
        _norm([gl]) / _norm([g]) if per_tensor else
        _norm(g_local[-2:]) / _norm(g_bal))
            for w, g, gl in zip(stepped[-2:], g_bal, g_local[-2:])]

  expected = rebalanced(g_bal_pre)
  np.testing.assert_allclose(got.trainable[0], stepped[0], atol=1e-6)
  for got_w, want in zip(got.trainable[-2:], expected):
    np.testing.assert_allclose(got_w, want, rtol=1e-5, atol=1e-6)
  # Each alternative is far outside that tolerance: the step at the
  # post-step parameters, per-tensor norms, no re-balancing in round 1.
  for other in (rebalanced(g_bal_post), rebalanced(g_bal_pre, True),
                stepped[-2:]):
    assert max(np.max(np.abs(o - e)) for o, e in zip(other, expected)) > 1e-4


def _data():
  rng = np.random.default_rng(0)
  # Client 2 never holds class 3, so prototypes of absent classes matter.
  y = np.concatenate([rng.integers(0, 4, 80), rng.integers(0, 3, 40)])
  x = (rng.random((120, 6, 6, 1)) * 0.3 + y[:, None, None, None] / 4).astype(
      np.float32)
  pool = arrays.LabeledArrays(x=x, y=y.astype(np.int64))
  parts = [np.arange(0, 40), np.arange(40, 80), np.arange(80, 120)]
  return pool, federated.build_federated_data(
      pool, parts, NUM_CLASSES, validation_fraction=0.0, seed=0)


_CONFIG = registry.AlgorithmConfig(client_lr=0.1)


def _options(strength):
  return redgrape.RedGrapeOptions(rebalance_strength=strength, threshold=3)


def _context():
  return registry.TaskContext(num_classes=NUM_CLASSES, num_clients=NUM_CLIENTS,
                              train_class_counts=np.ones(NUM_CLASSES))


def _fixed_order_inputs(pool):
  # Unshuffled datasets: RedGrape reads each client's data three times (its
  # prototypes, its balanced set, training), and a reshuffling dataset would
  # give its training pass a different order than FedAvg's.
  parts = [np.arange(0, 40), np.arange(40, 80), np.arange(80, 120)]
  return [tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
      x=pool.x[part], y=pool.y[part])).batch(8) for part in parts]


def _rounds(process, pool, rounds):
  state, weights, metrics = process.initialize(), [], []
  for _ in range(rounds):
    output = process.next(state, _fixed_order_inputs(pool))
    state = output.state
    weights.append(process.get_model_weights(state))
    metrics.append(output.metrics)
  return weights, metrics


@pytest.fixture(scope='module')
def runs():
  pool, data = _data()
  rebalanced = registry.build_process('redgrape', SPEC, _CONFIG, _context(),
                                      _options(0.1))
  plain_head = registry.build_process('redgrape', SPEC, _CONFIG, _context(),
                                      _options(0.0))
  fedavg = fedavg_family.build_local_training_process(
      two_stream.TwoStreamSpec.of(SPEC), _CONFIG.client_optimizer(),
      _CONFIG.server_sgd())
  return dict(data=data, process=rebalanced,
              rebalanced=_rounds(rebalanced, pool, 2),
              plain_head=_rounds(plain_head, pool, 2),
              fedavg=_rounds(fedavg, pool, 2))


def _flat(weights):
  return np.concatenate([np.ravel(w) for w in weights.trainable])


def test_model_weights_are_the_plain_model(runs):
  weights_type = runs['process'].get_model_weights.type_signature.result
  assert weights_type == SPEC.weights_type()
  weights = runs['rebalanced'][0][-1]
  model = SPEC.build_keras()
  weights.assign_weights_to(model)  # Evaluation uses W only (eq. 16).
  assert model(np.zeros((2, 6, 6, 1), np.float32)).shape == (2, NUM_CLASSES)


def test_lambda_zero_is_fedavg_with_a_two_stream_head(runs):
  fedavg_weights, _ = runs['fedavg']
  plain_head_weights, _ = runs['plain_head']
  for two_stream_weights, plain in zip(fedavg_weights, plain_head_weights):
    # FedAvg's weights carry W_hat last; the rest is RedGrape's model.
    without_w_hat = np.concatenate(
        [np.ravel(w) for w in two_stream_weights.trainable[:-2]])
    np.testing.assert_allclose(without_w_hat, _flat(plain), rtol=1e-5,
                               atol=1e-6)


def test_rebalancing_from_round_one(runs):
  rebalanced, metrics = runs['rebalanced']
  plain_head, _ = runs['plain_head']
  # Round 1 has no global prototypes, but every client holds classes with at
  # least T examples: eq. 12's balanced-set part re-balances W already.
  for round_num in range(2):
    assert not np.allclose(_flat(rebalanced[round_num]),
                           _flat(plain_head[round_num]))
  report = metrics[0]['client_work']['round_report']['extension']
  np.testing.assert_array_equal(report['mask'], [1, 1, 1, 1])
  assert np.abs(report['values']['kernel']).sum() > 0


def test_end_to_end_with_the_runner(runs):
  evaluator = runner.Evaluator(
      SPEC, arrays.LabeledArrays(x=np.zeros((8, 6, 6, 1), np.float32),
                                 y=np.arange(8, dtype=np.int64) % 4),
      np.ones(NUM_CLASSES))
  summary = runner.run(
      runs['process'], runs['data'],
      selection.UniformSelector(NUM_CLIENTS, NUM_CLIENTS, 0), evaluator,
      runner.RunConfig(rounds=2, local_epochs=1, batch_size=8, eval_every=2,
                       seed=0, quiet=True))
  assert 0.0 <= summary['accuracy'] <= 1.0
  assert summary['rounds'] == 2 and len(summary['per_class_accuracy']) == 4


@pytest.mark.parametrize('flag, value', [('redgrape_lambda', -0.1),
                                         ('redgrape_threshold', 0)])
def test_bad_flags_name_the_flag(flag, value):
  with pytest.raises(errors.UserInputError, match=f'--{flag}'):
    registry.make_options('redgrape', **{flag: value})


def test_the_fast_eq12_equals_the_per_class_definition():
  # balanced_part + prototype_part (the loop's form) against
  # rebalancing_gradients over class_mean_gradients (eq. 12 as written),
  # on a balanced set where classes 0 and 2 of 4 are eligible (T = 3).
  rng = np.random.default_rng(0)
  num_classes, dim, threshold = 4, 5, 3
  features = tf.constant(rng.normal(size=[6, dim]), tf.float32)
  labels = tf.constant([0, 0, 0, 2, 2, 2], tf.int64)
  kernel = tf.constant(rng.normal(size=[dim, num_classes]), tf.float32)
  bias = tf.constant(rng.normal(size=[num_classes]), tf.float32)
  eligible = tf.constant([1.0, 0.0, 1.0, 0.0])
  prototypes = collections.OrderedDict(
      values=collections.OrderedDict(
          kernel=tf.constant(rng.normal(size=[num_classes, dim, num_classes]),
                             tf.float32),
          bias=tf.constant(rng.normal(size=[num_classes, num_classes]),
                           tf.float32)),
      mask=tf.constant([1.0, 1.0, 1.0, 0.0]))
  real = classifier_gradients.class_mean_gradients(
      features, labels, kernel, bias, num_classes)['values']
  expected = redgrape.rebalancing_gradients(real, eligible, prototypes,
                                            num_classes)
  fast = tf.nest.map_structure(
      tf.add,
      redgrape.balanced_part(features, labels, kernel, bias, threshold,
                             num_classes),
      redgrape.prototype_part(eligible, prototypes, num_classes))
  for name in ('kernel', 'bias'):
    np.testing.assert_allclose(fast[name], expected[name], rtol=1e-5,
                               atol=1e-6)


def test_the_compact_balanced_set_keeps_only_eligible_classes():
  selected = collections.OrderedDict(
      x=tf.reshape(tf.range(6, dtype=tf.float32), [6, 1]),
      y=tf.constant([0, 0, 1, 1, 2, 2], tf.int64),
      eligible=tf.constant([1.0, 0.0, 1.0]))
  compact = redgrape.compact_balanced_set(selected, 2)
  np.testing.assert_array_equal(compact['y'], [0, 0, 2, 2])
  np.testing.assert_array_equal(compact['x'][:, 0], [0, 1, 4, 5])


def test_clients_without_a_balanced_set_train_with_a_cnn():
  # T above every class count: every client's balanced set is empty, and the
  # step must not run the features on an empty batch (the worker's CPU
  # convolutions reject one); g_bal is then the prototypes' part alone.
  pool, _ = _data()
  cnn = spec_lib.ModelSpec('cnn', (6, 6, 1), NUM_CLASSES, seed=0)
  process = registry.build_process(
      'redgrape', cnn, _CONFIG, _context(),
      redgrape.RedGrapeOptions(rebalance_strength=0.1, threshold=100))
  weights, _ = _rounds(process, pool, 2)
  assert all(np.all(np.isfinite(w)) for w in weights[-1].trainable)
