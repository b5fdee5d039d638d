"""Ratio Loss (002 eqs. 10-11): per-example class weights, broadcast weights,
the detection stage, and the task end to end."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tff_imbalance import errors
from tff_imbalance import losses
from tff_imbalance.data import arrays
from tff_imbalance.data import auxiliary
from tff_imbalance.data import federated
from tff_imbalance.learning import registry
from tff_imbalance.learning import selection
from tff_imbalance.learning.algorithms import ratio
from tff_imbalance.models import spec as spec_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASS_WEIGHTS = tf.constant([1.0, 3.5, 1.2], tf.float32)


def _batch(labels, seed=0):
  logits = np.random.default_rng(seed).normal(size=(len(labels), 3))
  return tf.constant(labels, tf.int64), tf.constant(logits, tf.float32)


def test_each_example_is_weighted_by_its_own_class():
  labels, logits = _batch([0, 0, 2, 1])
  loss = losses.ratio_loss('per_example')
  ce = losses.cross_entropy(labels, logits).numpy()
  per_example = loss(labels, logits, CLASS_WEIGHTS).numpy()
  np.testing.assert_allclose(per_example, ce * [1.0, 1.0, 1.2, 3.5],
                             rtol=1e-6)
  # The one class-1 example adds exactly 3.5 times its CE to the batch sum.
  without = loss(labels[:3], logits[:3], CLASS_WEIGHTS).numpy()
  assert per_example.sum() - without.sum() == pytest.approx(3.5 * ce[3],
                                                            rel=1e-5)


def test_as_coded_weighting_is_batch_mean_weight_times_ce():
  labels, logits = _batch([0, 0, 2, 1])
  ce = losses.cross_entropy(labels, logits).numpy()
  as_coded = losses.ratio_loss('as_coded')(labels, logits, CLASS_WEIGHTS)
  mean_weight = np.mean([1.0, 1.0, 1.2, 3.5])
  assert np.mean(as_coded) == pytest.approx(mean_weight * ce.mean(), rel=1e-5)
  assert not np.allclose(
      as_coded, losses.ratio_loss()(labels, logits, CLASS_WEIGHTS))


@pytest.mark.parametrize('field, value, flag', [
    ('alpha', 0.0, '--ratio_alpha'),
    ('beta', -0.1, '--ratio_beta'),
    ('start_round', 0, '--ratio_start_round'),
    ('weighting', 'bogus', '--ratio_weighting'),
    ('normalize', 'max', '--ratio_normalize'),
])
def test_bad_ratio_flags_are_named(field, value, flag):
  with pytest.raises(errors.UserInputError, match=flag):
    ratio.RatioOptions(**{field: value})


def test_bad_monitor_threshold_is_named():
  with pytest.raises(errors.UserInputError, match='--ratio_threshold'):
    registry.AlgorithmConfig(ratio_threshold=0.0)


def test_ratio_without_aux_data_is_refused():
  spec = spec_lib.ModelSpec('mlp', (6, 6, 1), 4, seed=0)
  context = registry.TaskContext(4, 3, np.ones(4))
  with pytest.raises(errors.UserInputError, match='--aux_per_class'):
    registry.build_process('ratio', spec, registry.AlgorithmConfig(), context)


def _cross_entropy_at(spec, weights, pool):
  model = spec.build_keras()
  weights.assign_weights_to(model)
  return losses.cross_entropy(tf.constant(pool.y),
                              model(pool.x, training=False)).numpy()


def test_class_weights_reach_the_clients_from_the_start_round():
  rng = np.random.default_rng(0)
  y = rng.choice(4, 200, p=[0.6, 0.25, 0.1, 0.05]).astype(np.int64)
  x = (rng.random((200, 6, 6, 1)) * 0.3 + y[:, None, None, None] / 4).astype(
      np.float32)
  split = auxiliary.hold_out(y, 4, per_class=5, seed=0)
  pool = arrays.LabeledArrays(x=x, y=y)
  clients = np.array_split(split.remaining, 3)
  data = federated.build_federated_data(pool, clients, 4,
                                        validation_fraction=0.0, seed=0)
  spec = spec_lib.ModelSpec('mlp', (6, 6, 1), 4, seed=0)
  beta = 1.0
  config = registry.AlgorithmConfig(client_lr=1e-3, batch_size=16)
  context = registry.TaskContext(4, 3, np.bincount(y, minlength=4),
                                 aux_data=split.server_data(pool))
  process = registry.build_process(
      'ratio', spec, config, context,
      ratio.RatioOptions(beta=beta, start_round=2))
  state = process.initialize()
  cohort = selection.UniformSelector(3, 3, 0).select(1, None)
  outputs = []
  for round_num in (1, 2):
    weights_received = process.get_model_weights(state)
    output = process.next(state, data.round_inputs(
        cohort, round_num=round_num, local_epochs=1, batch_size=16, seed=0,
        with_validation=False))
    state = output.state
    outputs.append((weights_received, output))
  broadcast = [np.asarray(o.state['inner'].client_work['broadcast'])
               for _, o in outputs]
  np.testing.assert_array_equal(broadcast[0], np.ones(4))  # before round 2
  ratios = np.asarray(outputs[1][1].metrics['released']['monitor_ratio'])
  raw = 1.0 + beta * ratios
  np.testing.assert_allclose(broadcast[1], raw / raw.mean(), rtol=1e-6)
  assert np.ptp(broadcast[1]) > 0.1
  # With a tiny learning rate the clients' mean training loss is the mean of
  # w_y * CE under the received model: the broadcast weights were used.
  trained = pool.take(split.remaining)
  for (received, output), class_weights in zip(outputs, broadcast):
    ce = _cross_entropy_at(spec, received, trained)
    weighted = np.mean(class_weights[trained.y] * ce)
    reported = float(output.metrics['client_work']['train']['loss'])
    assert reported == pytest.approx(weighted, rel=2e-3)
  assert abs(weighted - np.mean(ce)) > 0.05 * np.mean(ce)


def _skewed_problem():
  rng = np.random.default_rng(0)
  y = rng.choice(4, 200, p=[0.6, 0.25, 0.1, 0.05]).astype(np.int64)
  x = (rng.random((200, 6, 6, 1)) * 0.3 + y[:, None, None, None] / 4).astype(
      np.float32)
  split = auxiliary.hold_out(y, 4, per_class=5, seed=0)
  pool = arrays.LabeledArrays(x=x, y=y)
  # Unequal clients: TFF's weighted mean differs from the unweighted one.
  clients = np.split(split.remaining, [30, 90])
  data = federated.build_federated_data(pool, clients, 4,
                                        validation_fraction=0.0, seed=0)
  context = registry.TaskContext(4, 3, np.bincount(y, minlength=4),
                                 aux_data=split.server_data(pool))
  return data, context


def _run(name, config, data, context, rounds, options=None):
  spec = spec_lib.ModelSpec('mlp', (6, 6, 1), 4, seed=0)
  process = registry.build_process(name, spec, config, context, options)
  state, outputs = process.initialize(), []
  for round_num in range(1, rounds + 1):
    output = process.next(state, data.round_inputs(
        [0, 1, 2], round_num=round_num, local_epochs=1, batch_size=16,
        seed=0, with_validation=False))
    state = output.state
    outputs.append(output)
  weights = process.get_model_weights(state)
  return np.concatenate([np.ravel(w) for w in weights.trainable]), outputs


@pytest.mark.parametrize('normalize', ['mean', 'none'])
def test_ratio_with_beta_zero_is_fedavg(normalize):
  data, context = _skewed_problem()
  config = registry.AlgorithmConfig(client_lr=0.05, batch_size=16)
  options = ratio.RatioOptions(beta=0.0, normalize=normalize)
  ratio_weights, _ = _run('ratio', config, data, context, 2, options)
  fedavg_weights, _ = _run('fedavg', config, data, context, 2)
  np.testing.assert_allclose(ratio_weights, fedavg_weights, atol=1e-6)
  with_beta, _ = _run('ratio', config, data, context, 2,
                      dataclasses.replace(options, beta=1.0))
  assert not np.allclose(with_beta, fedavg_weights, atol=1e-4)


def test_class_weights_stay_bounded_and_ordered_under_client_momentum():
  """Client momentum 0.9 with a large step: the normalised weights keep mean
  1 (so at most C), follow Ra's order, and the clients' loss stays finite."""
  data, context = _skewed_problem()
  config = registry.AlgorithmConfig(client_lr=0.5, client_momentum=0.9,
                                    batch_size=16)
  weights, outputs = _run('ratio', config, data, context, 4,
                          ratio.RatioOptions(beta=1.0))
  assert np.all(np.isfinite(weights))
  for output in outputs:
    class_weights = np.asarray(
        output.state['inner'].client_work['broadcast'])
    ratios = np.asarray(output.metrics['released']['monitor_ratio'])
    assert np.all(np.isfinite(class_weights))
    assert class_weights.mean() == pytest.approx(1.0, rel=1e-5)
    assert class_weights.max() <= 4.0
    np.testing.assert_array_equal(np.argsort(class_weights, kind='stable'),
                                  np.argsort(ratios, kind='stable'))
    assert np.isfinite(float(output.metrics['client_work']['train']['loss']))


def test_ratio_runs_through_the_task(tmp_path):
  out = tmp_path / 'run'
  result = subprocess.run(
      [sys.executable, '-m', 'tasks.mnist_lt', '--algo=ratio', '--model=mlp',
       '--rounds=2', '--eval_every=2', '--batch_size=32', '--num_clients=4',
       '--clients_per_round=2', '--imbalance_ratio=10', '--aux_per_class=8',
       '--ratio_start_round=2', f'--output_dir={out}', '--quiet'],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      stdin=subprocess.DEVNULL)
  assert result.returncode == 0, result.stderr
  summary = json.loads((out / 'summary.json').read_text())
  assert summary['data']['aux_class_counts'] == [8] * 10
  assert summary['data']['aux_held_out_of_clients']
  # 400 training digits per class, minus the 8 the server holds.
  assert summary['train_class_counts'][0] <= 392
  cosine = summary['released']['monitor_cosine_similarity']
  assert cosine['rounds'] == 2 and 0.0 < cosine['min'] <= 1.0 + 1e-6
  assert 'minority_accuracy' in summary and 'auc' in summary
  header = (out / 'metrics.csv').read_text().splitlines()[0]
  assert 'monitor_cosine_similarity' in header
