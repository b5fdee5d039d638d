"""The composition monitor (002 sec 3.2): its math by hand, its wrapper, aux data."""

import csv

import numpy as np
import pytest

from tff_imbalance import compat
from tff_imbalance import errors
from tff_imbalance import runner
from tff_imbalance.data import arrays
from tff_imbalance.data import auxiliary
from tff_imbalance.data import federated
from tff_imbalance.learning import monitor
from tff_imbalance.learning import registry
from tff_imbalance.learning import selection
from tff_imbalance.models import spec as spec_lib

# changes[p, r, i]: change of kernel component (r, i) per example of class p.
CHANGES = np.array([
    [[2.0, -1.0], [0.1, -0.1]],    # feeding class 0
    [[-0.5, 1.0], [-0.2, 0.05]],   # feeding class 1
], np.float32)


def test_ratios_filter_components_by_hand():
  # Node 0: own (2, 0.1), others (-0.5, -0.2): component ratios 4 and 0.5,
  # so only r=0 passes T_Ra = 1.25 and Ra_0 = |2| / |-0.5| = 4.
  # Node 1: own (1, 0.05), others (-1, -0.1): ratios 1 and 0.5, none passes,
  # so both are kept and Ra_1 = |1 + 0.05| / |-1 - 0.1| = 1.05 / 1.1.
  ratios, kept = monitor.class_ratios(CHANGES, 1.25)
  np.testing.assert_allclose(ratios.numpy(), [4.0, 1.05 / 1.1], rtol=1e-6)
  np.testing.assert_array_equal(kept.numpy(), [[True, True], [False, True]])


def test_composition_estimate_by_hand():
  # Truth: 30 examples of class 0, 10 of class 1 (n = 40), K = 2 clients, so
  # K * dG = 30 * CHANGES[0] + 10 * CHANGES[1] where the model is exact.
  # (r=0, i=0): K dG = 55 -> N_0 = (55 + 40 * 0.5) / (2 + 0.5) = 30.
  # (r=1, i=0) is filtered out; its dG = -1 would give N_0 = 20.
  # (r=0, i=1): K dG = -20 -> N_1 = (-20 + 40 * 1) / (1 + 1) = 10.
  # (r=1, i=1): dG = 5 gives N_1 = (10 + 4) / 0.15 = 93.3 > n: an outlier.
  global_change = np.array([[27.5, -10.0], [-1.0, 5.0]], np.float32)
  _, kept = monitor.class_ratios(CHANGES, 1.25)
  estimate = monitor.estimate_composition(CHANGES, kept, global_change, 2, 40)
  np.testing.assert_allclose(estimate.numpy(), [30.0, 10.0], rtol=1e-5)
  assert monitor.cosine_similarity(estimate, [3, 1]).numpy() == pytest.approx(
      1.0, abs=1e-6)
  # Without the filter, (r=1, i=0) enters node 0's mean: (30 + 20) / 2.
  unfiltered = monitor.estimate_composition(
      CHANGES, np.ones([2, 2], bool), global_change, 2, 40)
  np.testing.assert_allclose(unfiltered.numpy(), [25.0, 10.0], rtol=1e-5)


def test_weighted_estimate_matches_example_weighted_aggregation():
  """Client A: 30 class-0 examples, client B: 10 class-1 examples. TFF's
  weighted mean makes 40 dG = 30 (30 D0) + 10 (10 D1): the update the server
  applied holds M = (900, 100) weighted examples, which eq. 8's weighted form
  (S = n = 40, X = sum n_k^2 = 1000) recovers and the unweighted one (S = K,
  X = n) does not."""
  global_change = (900.0 * CHANGES[0] + 100.0 * CHANGES[1]) / 40.0
  _, kept = monitor.class_ratios(CHANGES, 1.25)
  weighted = monitor.estimate_composition(CHANGES, kept, global_change, 40.0,
                                          1000.0).numpy()
  np.testing.assert_allclose(weighted, [900.0, 100.0], rtol=1e-5)
  unweighted = monitor.estimate_composition(CHANGES, kept, global_change, 2,
                                            40).numpy()
  assert not np.allclose(unweighted / unweighted.sum(), [0.9, 0.1], atol=0.05)


def test_class_without_usable_component_gets_an_even_share():
  global_change = np.array([[1e3, 1e3], [1e3, 1e3]], np.float32)  # outliers
  _, kept = monitor.class_ratios(CHANGES, 1.25)
  estimate = monitor.estimate_composition(CHANGES, kept, global_change, 2, 40)
  np.testing.assert_allclose(estimate.numpy(), [20.0, 20.0])


def test_cosine_similarity():
  assert monitor.cosine_similarity([1, 0], [0, 2]).numpy() == 0.0
  assert monitor.cosine_similarity([1, 1], [2, 2]).numpy() == pytest.approx(1)
  assert monitor.cosine_similarity([0, 0], [1, 2]).numpy() == 0.0


def test_hold_out_is_seeded_disjoint_and_capped_at_half_a_class():
  labels = np.array([0] * 50 + [1] * 50 + [2] * 6)
  split = auxiliary.hold_out(labels, 3, per_class=8, seed=1)
  np.testing.assert_array_equal(split.class_counts, [8, 8, 3])
  np.testing.assert_array_equal(np.bincount(labels[split.aux_indices]),
                                [8, 8, 3])
  assert not set(split.aux_indices) & set(split.remaining)
  assert len(split.aux_indices) + len(split.remaining) == len(labels)
  again = auxiliary.hold_out(labels, 3, per_class=8, seed=1)
  np.testing.assert_array_equal(split.aux_indices, again.aux_indices)
  other = auxiliary.hold_out(labels, 3, per_class=8, seed=2)
  assert not np.array_equal(split.aux_indices, other.aux_indices)
  none = auxiliary.hold_out(labels, 3, per_class=0, seed=1)
  assert len(none.remaining) == len(labels)
  assert none.server_data(arrays.LabeledArrays(labels, labels)) is None
  assert split.summary()['aux_held_out_of_clients']
  with pytest.raises(errors.UserInputError, match='--aux_per_class'):
    auxiliary.hold_out(labels, 3, per_class=-1, seed=1)


def _tiny_problem(num_clients=4):
  rng = np.random.default_rng(0)
  # Skewed classes, so that the composition is worth estimating.
  y = rng.choice(4, 280, p=[0.55, 0.25, 0.15, 0.05]).astype(np.int64)
  x = (rng.random((280, 6, 6, 1)) * 0.3 + y[:, None, None, None] / 4).astype(
      np.float32)
  split = auxiliary.hold_out(y, 4, per_class=6, seed=0)
  pool = arrays.LabeledArrays(x=x, y=y)
  parts = np.array_split(split.remaining, num_clients)
  data = federated.build_federated_data(pool, parts, 4,
                                        validation_fraction=0.0, seed=0)
  context = registry.TaskContext(
      num_classes=4, num_clients=num_clients,
      train_class_counts=np.bincount(y[split.remaining], minlength=4),
      aux_data=split.server_data(pool))
  return data, context


def _final_weights(summary_dir):
  with np.load(summary_dir / runner.WEIGHTS_FILE) as saved:
    return [saved[k] for k in sorted(saved.files)]


def test_monitor_with_fedavg_is_a_pure_diagnostic(tmp_path):
  data, context = _tiny_problem()
  spec = spec_lib.ModelSpec('mlp', (6, 6, 1), 4, seed=0)
  no_evaluation = lambda weights: dict.fromkeys(runner.SCALAR_EVAL_KEYS, 0.0)
  weights = {}
  for watched in (False, True):
    config = registry.AlgorithmConfig(client_lr=0.05, monitor=watched,
                                      batch_size=8)
    process = registry.build_process('fedavg', spec, config, context)
    out = tmp_path / str(watched)
    summary = runner.run(
        process, data, selection.UniformSelector(4, 2, 0), no_evaluation,
        runner.RunConfig(rounds=2, local_epochs=1, batch_size=8, eval_every=5,
                         seed=0, quiet=True, output_dir=str(out)))
    weights[watched] = _final_weights(out)
  for a, b in zip(weights[False], weights[True]):
    np.testing.assert_array_equal(a, b)
  with open(out / runner.METRICS_FILE, newline='') as f:
    rows = list(csv.DictReader(f))
  cosines = [float(r['monitor_cosine_similarity']) for r in rows]
  assert len(cosines) == 2 and all(0.8 < c <= 1.0 + 1e-6 for c in cosines)
  assert monitor.RELEASED == runner.RELEASED_KEY
  released = summary['released']
  assert released['monitor_cosine_similarity']['min'] == pytest.approx(
      min(cosines))
  assert sum(released['monitor_estimated_composition']['last']) == (
      pytest.approx(1.0, abs=1e-5))
  assert len(released['monitor_true_composition']['last']) == 4


def test_monitor_without_aux_data_is_refused():
  data, context = _tiny_problem()
  del data
  spec = spec_lib.ModelSpec('mlp', (6, 6, 1), 4, seed=0)
  config = registry.AlgorithmConfig(monitor=True)
  no_aux = registry.TaskContext(context.num_classes, context.num_clients,
                                context.train_class_counts, aux_data=None)
  with pytest.raises(errors.UserInputError, match='--aux_per_class'):
    registry.build_process('fedavg', spec, config, no_aux)


def test_monitor_estimate_beats_the_uniform_guess_on_a_two_class_cohort():
  """A cohort holding only classes 0 and 1 of 4, in clients of unequal size:
  the uniform guess scores cosine <= 1 / sqrt(2) against any such truth, so
  the 0.9 threshold only passes an estimate that found the two classes."""
  rng = np.random.default_rng(1)
  y = np.concatenate([np.zeros(45), np.ones(15), np.ones(20),
                      np.repeat(np.arange(4), 6)]).astype(np.int64)
  x = (rng.random((len(y), 6, 6, 1)) * 0.3 +
       y[:, None, None, None] / 4).astype(np.float32)
  pool = arrays.LabeledArrays(x=x, y=y)
  aux = pool.take(np.arange(80, len(y)))
  data = federated.build_federated_data(
      pool, [np.arange(60), np.arange(60, 80)], 4, validation_fraction=0.0,
      seed=0)
  context = registry.TaskContext(4, 2, np.bincount(y[:80], minlength=4),
                                 aux_data=aux)
  spec = spec_lib.ModelSpec('mlp', (6, 6, 1), 4, seed=0)
  config = registry.AlgorithmConfig(client_lr=0.05, monitor=True,
                                    batch_size=8)
  process = registry.build_process('fedavg', spec, config, context)
  inputs = data.round_inputs([0, 1], round_num=1, local_epochs=1,
                             batch_size=8, seed=0, with_validation=False)
  released = process.next(process.initialize(), inputs).metrics['released']
  # The example-weighted truth: 60 (45, 15) + 20 (0, 20) = (2700, 1300).
  np.testing.assert_allclose(released['monitor_true_composition'],
                             [2700 / 4000, 1300 / 4000, 0.0, 0.0], rtol=1e-5)
  uniform = monitor.cosine_similarity(np.ones(4), [2700, 1300, 0, 0]).numpy()
  assert uniform < 0.71
  assert released['monitor_cosine_similarity'] > 0.9


@pytest.mark.parametrize('model,momentum', [('mlp', 0.0), ('mlp', 0.9),
                                            ('cnn_dropout', 0.0)])
def test_single_step_changes_equal_the_trained_ones(model, momentum):
  tff = compat.tff
  """The closed-form per-class step (one epoch, each class in one batch)
  equals training a copy per class; a model with dropout, whose masks follow
  the batch, is left to the trainings."""
  rng = np.random.default_rng(0)
  spec = spec_lib.ModelSpec(model, (6, 6, 1), 4, seed=0)
  per_class = [rng.random((n, 6, 6, 1)).astype(np.float32)
               for n in (5, 8, 3, 8)]
  optimizer = tff.learning.optimizers.build_sgdm(
      learning_rate=0.1, momentum=momentum or None)
  weights = spec.initial_weights_computation()()
  trained = monitor._trained_changes(spec, per_class, optimizer, 1, 8)
  aux = arrays.LabeledArrays(
      x=np.concatenate(per_class),
      y=np.repeat(np.arange(4), [5, 8, 3, 8]).astype(np.int64))
  chosen = monitor.build_auxiliary_changes(spec, aux, optimizer, 1, 8)
  if model == 'cnn_dropout':
    assert chosen.type_signature == trained.type_signature
    np.testing.assert_array_equal(chosen(weights), trained(weights))
    return
  closed_form = monitor._single_step_changes(spec, per_class, optimizer)
  np.testing.assert_allclose(closed_form(weights), trained(weights),
                             rtol=1e-4, atol=1e-7)
  np.testing.assert_array_equal(chosen(weights), closed_form(weights))
  # Two epochs are two steps: the trainings, not the closed form.
  two_epochs = monitor.build_auxiliary_changes(spec, aux, optimizer, 2, 8)
  np.testing.assert_array_equal(
      two_epochs(weights),
      monitor._trained_changes(spec, per_class, optimizer, 2, 8)(weights))
