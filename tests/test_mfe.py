"""MFE / MSFE in federated training: the minority rule, MFE-L's local sets,
MFE-G's sets from the monitor, the flags and the task (learning/mfe.py)."""

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
from tff_imbalance.data import federated
from tff_imbalance.learning import mfe
from tff_imbalance.learning import registry
from tff_imbalance.models import spec as spec_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 4
_SPEC = spec_lib.ModelSpec('mlp', (6, 6, 1), NUM_CLASSES, seed=0)


def test_minority_mask_is_below_a_share_of_the_balanced_share():
  # 204 examples, balanced share 51: below 0.5 * 51 = 25.5 is minority; an
  # absent class too (share 0); no counts, no minority.
  np.testing.assert_array_equal(
      mfe.minority_mask(tf.constant([100, 100, 4, 0]), 0.5), [0, 0, 1, 1])
  np.testing.assert_array_equal(
      mfe.minority_mask(tf.constant([100.0, 60, 30, 14]), 1.0), [0, 0, 1, 1])
  np.testing.assert_array_equal(
      mfe.minority_mask(tf.constant([0, 0, 0, 0]), 0.5), [0, 0, 0, 0])


@pytest.mark.parametrize('share', [0.0, 1.5])
def test_bad_minority_share_is_named(share):
  with pytest.raises(errors.UserInputError, match='--mfe_minority_share'):
    registry.AlgorithmConfig(loss='mfe', mfe_minority_share=share)


def test_bad_minority_source_is_named():
  with pytest.raises(errors.UserInputError, match='--mfe_minority'):
    registry.AlgorithmConfig(loss='mfe', mfe_minority='oracle')


def _problem():
  """Three clients: client 0 holds class 3 rarely (a local minority),
  clients 1 and 2 are locally balanced over two classes each; class 3 is
  rare overall."""
  rng = np.random.default_rng(0)
  client_labels = [np.array([0] * 20 + [1] * 20 + [3] * 2),
                   np.array([1] * 15 + [2] * 15),
                   np.array([0] * 4 + [3] * 4)]
  y = np.concatenate(client_labels).astype(np.int64)
  x = (rng.random((len(y), 6, 6, 1)) * 0.3 +
       y[:, None, None, None] / 4).astype(np.float32)
  pool = arrays.LabeledArrays(x=x, y=y)
  parts = np.split(np.arange(len(y)), np.cumsum([len(c) for c in
                                                 client_labels])[:-1])
  data = federated.build_federated_data(pool, parts, NUM_CLASSES,
                                        validation_fraction=0.0, seed=0)
  aux_y = np.arange(16) % NUM_CLASSES
  aux_x = (rng.random((16, 6, 6, 1)) * 0.3 +
           aux_y[:, None, None, None] / 4).astype(np.float32)
  context = registry.TaskContext(
      NUM_CLASSES, 3, np.bincount(y, minlength=NUM_CLASSES),
      aux_data=arrays.LabeledArrays(x=aux_x, y=aux_y.astype(np.int64)))
  return pool, parts, data, context


def _round_inputs(data, round_num):
  # One batch per client: its reported loss is its MFE over all its data.
  return data.round_inputs([0, 1, 2], round_num=round_num, local_epochs=1,
                           batch_size=64, seed=0, with_validation=False)


def _mfe_at(weights, pool, parts, masks, squared=False):
  """The clients' example-weighted mean MFE under `weights`, client k with
  minority mask masks[k]: what the clients report with a tiny step."""
  model = _SPEC.build_keras()
  weights.assign_weights_to(model)
  loss = losses.mean_false_error(squared)
  total = 0.0
  for part, mask in zip(parts, masks):
    client = pool.take(part)
    logits = model(client.x, training=False)
    total += float(tf.reduce_sum(loss(tf.constant(client.y), logits,
                                      tf.constant(mask, tf.float32))))
  return total / sum(len(p) for p in parts)


def test_mfe_local_takes_each_clients_own_minority():
  pool, parts, data, context = _problem()
  config = registry.AlgorithmConfig(loss='mfe', mfe_minority='local',
                                    client_lr=1e-4)
  process = registry.build_process('fedavg', _SPEC, config, context)
  state = process.initialize()
  received = process.get_model_weights(state)
  output = process.next(state, _round_inputs(data, 1))
  reported = float(output.metrics['client_work']['train']['loss'])
  # Client 0: class 3 (2 of 42) is below half a balanced share, and so are
  # its absent class 2; clients 1 and 2 find only their absent classes.
  local_masks = [[0, 0, 1, 1], [1, 0, 0, 1], [0, 1, 1, 0]]
  assert reported == pytest.approx(
      _mfe_at(received, pool, parts, local_masks), rel=1e-3)
  no_minority = _mfe_at(received, pool, parts, [[0] * 4] * 3)
  assert abs(reported - no_minority) > 0.05 * no_minority


def test_mfe_local_on_locally_balanced_clients_is_mse():
  """002's finding for MFE-L: a client whose classes are balanced finds no
  minority among them, and MFE is then MSE (and MSFE its square's mean)."""
  _, _, data, context = _problem()  # Clients 1 and 2 are balanced.

  def weights(loss):
    config = registry.AlgorithmConfig(loss=loss, client_lr=0.5)
    process = registry.build_process('fedavg', _SPEC, config, context)
    state = process.initialize()
    for round_num in (1, 2):
      state = process.next(state, data.round_inputs(
          [1, 2], round_num=round_num, local_epochs=1, batch_size=8, seed=0,
          with_validation=False)).state
    return np.concatenate([np.ravel(w) for w in
                           process.get_model_weights(state).trainable])

  mse = weights('mse')
  np.testing.assert_allclose(weights('mfe'), mse, atol=1e-6)
  assert not np.allclose(weights('ce'), mse, atol=1e-4)


def test_mfe_global_uses_the_monitors_minority_set_from_round_two():
  pool, parts, data, context = _problem()
  # Share 1: below a balanced share, so that some class but not all is in
  # the set whatever the monitor estimates (the shares sum to 1).
  config = registry.AlgorithmConfig(loss='mfe', mfe_minority='global',
                                    mfe_minority_share=1.0, client_lr=1e-4,
                                    batch_size=64)
  process = registry.build_process('fedavg', _SPEC, config, context)
  state = process.initialize()
  estimates, reported, received, broadcasts = [], [], [], []
  for round_num in (1, 2):
    received.append(process.get_model_weights(state))
    output = process.next(state, _round_inputs(data, round_num))
    state = output.state
    estimates.append(np.asarray(
        output.metrics['released']['monitor_estimated_composition']))
    reported.append(float(output.metrics['client_work']['train']['loss']))
    broadcasts.append(state['inner'].client_work['broadcast'])
  # The broadcast after round t holds the monitor's estimates so far and the
  # minority rule applied to their sum.
  for t in (0, 1):
    estimate_sum = np.sum(estimates[:t + 1], axis=0)
    np.testing.assert_allclose(broadcasts[t]['estimate_sum'], estimate_sum,
                               rtol=1e-6)
    np.testing.assert_array_equal(
        broadcasts[t]['minority'],
        (estimate_sum < estimate_sum.sum() / NUM_CLASSES).astype(
            np.float32))
  # Round 1 knows no minority (MSE); round 2 trains with round 1's set.
  assert reported[0] == pytest.approx(
      _mfe_at(received[0], pool, parts, [[0] * 4] * 3), rel=1e-3)
  round_one_set = np.asarray(broadcasts[0]['minority'])
  assert 0 < round_one_set.sum() < NUM_CLASSES, round_one_set
  assert reported[1] == pytest.approx(
      _mfe_at(received[1], pool, parts, [round_one_set] * 3), rel=1e-3)


def test_mfe_on_a_method_without_minority_classes_is_refused():
  _, _, _, context = _problem()
  with pytest.raises(errors.UserInputError,
                     match=r'--loss=mfe .* --algo=climb .* --algo=fedadam'):
    registry.build_process('climb', _SPEC,
                           registry.AlgorithmConfig(loss='mfe'), context)


def test_a_fixed_minority_class_out_of_range_is_named():
  with pytest.raises(
      errors.UserInputError,
      match=r'minority classes must be in \[0, 4\) \(got \[4\]\)'):
    mfe.broadcast_minority_plugin(NUM_CLASSES, minority=[1, 4])


def test_mfe_global_without_auxiliary_data_is_refused():
  context = registry.TaskContext(NUM_CLASSES, 3, np.ones(NUM_CLASSES))
  with pytest.raises(errors.UserInputError, match='--aux_per_class'):
    registry.build_process('fedavg', _SPEC, registry.AlgorithmConfig(
        loss='msfe', mfe_minority='global'), context)


def test_mfe_flags_warn_without_an_mfe_loss():
  config = registry.AlgorithmConfig(loss='ce')
  assert [flag for flag, _ in registry.inapplicable_flags(
      'fedavg', config, None, ['mfe_minority', 'mfe_minority_share'])] == [
          'mfe_minority', 'mfe_minority_share']
  assert not registry.inapplicable_flags(
      'fedavg', registry.AlgorithmConfig(loss='mfe', mfe_minority='global'),
      None, ['mfe_minority', 'ratio_threshold'])


def test_mfe_global_runs_through_the_task(tmp_path):
  out = tmp_path / 'run'
  result = subprocess.run(
      [sys.executable, '-m', 'tasks.mnist_lt', '--algo=fedprox',
       '--loss=msfe', '--mfe_minority=global', '--model=mlp', '--rounds=2',
       '--eval_every=2', '--num_clients=6', '--clients_per_round=3',
       '--profile=unbalanced', '--minority_ratio=20',
       '--partition=classes_per_client', '--classes_per_client=2',
       '--aux_per_class=8', f'--output_dir={out}', '--quiet'],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      stdin=subprocess.DEVNULL)
  assert result.returncode == 0, result.stderr
  summary = json.loads((out / 'summary.json').read_text())
  assert summary['released']['monitor_cosine_similarity']['rounds'] == 2
  counts = np.array(summary['data']['client_class_counts'])
  assert ((counts > 0).sum(axis=1) == 2).all()
  assert 0 < summary['data']['local_global_cosine_mean'] < 1
