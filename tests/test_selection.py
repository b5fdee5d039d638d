"""Client selectors: uniform and Fed-Focal's psi rule (000 eqs. 7-13)."""

import numpy as np
import pytest

from tff_imbalance import errors
from tff_imbalance.learning import selection


def _psi(psi, num_clients=20, k=5, seed=0, **kwargs):
  return selection.PsiSelector(num_clients, k, psi, seed, **kwargs)


def _measurements(before, after):
  """Process measurements with the client work's per-slot validation losses."""
  return dict(client_work=dict(round_report=dict(
      validation_loss_before=np.asarray(before, np.float32),
      validation_loss_after=np.asarray(after, np.float32))))


def test_uniform_selector_is_fixed_size_distinct_and_seeded():
  selector = selection.UniformSelector(30, 7, seed=3)
  draws = [selector.select(t) for t in range(1, 20)]
  assert all(len(d) == 7 == len(set(d)) for d in draws)
  again = selection.UniformSelector(30, 7, seed=3)
  assert all(np.array_equal(d, again.select(t))
             for t, d in enumerate(draws, start=1))
  assert not np.array_equal(draws[0], selection.UniformSelector(
      30, 7, seed=4).select(1))


def test_first_round_is_uniform():
  cohort = _psi(0.8).select(1, None)
  assert len(cohort) == 5 == len(set(cohort))


def test_keeps_all_improved_clients_when_at_most_floor_psi_k():
  # floor(0.8 * 5) = 4 improved clients may be kept; 3 improved: keep all 3.
  last = np.array([2, 4, 6, 8, 10])
  improved = np.array([True, False, True, True, False])
  for round_num in range(2, 12):
    cohort = _psi(0.8).select_from_improved(round_num, last, improved)
    assert {2, 6, 8} <= set(cohort)
    assert len(cohort) == 5 == len(set(cohort))


def test_keeps_exactly_floor_psi_k_of_many_improved():
  last = np.array([1, 3, 5, 7, 9])
  improved = np.ones(5, bool)
  for psi, expected_kept in ((0.2, 1), (0.5, 2), (0.6, 3), (0.8, 4)):
    for round_num in range(2, 8):
      cohort = _psi(psi).select_from_improved(round_num, last, improved)
      kept_from_last = set(cohort[:expected_kept])
      assert kept_from_last <= set(last)
      assert len(cohort) == 5 == len(set(cohort))


@pytest.mark.parametrize('psi, k, expected_kept', [
    (0.2, 5, 1), (0.5, 5, 2), (0.6, 5, 3), (0.8, 5, 4), (0.58, 50, 29),
    (0.7, 10, 7)])
def test_keeps_exactly_floor_psi_k_clients_of_the_last_cohort(psi, k,
                                                              expected_kept):
  # Every client of the last cohort improved: eq. 8 caps the kept ones at
  # floor(psi K). In a population of 10,000 the uniform fill (eq. 12) almost
  # never redraws a last-cohort client, and these seeds do not.
  last = np.arange(k) * 7
  for round_num in range(2, 6):
    selector = _psi(psi, num_clients=10_000, k=k)
    cohort = selector.select_from_improved(round_num, last, np.ones(k, bool))
    assert len(set(cohort) & set(last)) == expected_kept
    assert len(cohort) == k == len(set(cohort))
    kept = selector.kept_clients(np.random.default_rng([0, round_num]))
    assert len(kept) == expected_kept and set(kept) <= set(last)


def test_psi_one_keeps_every_improved_client_and_psi_zero_keeps_none():
  last = np.array([0, 1, 2, 3, 4])
  improved = np.ones(5, bool)
  assert set(_psi(1.0).select_from_improved(2, last, improved)) == set(last)
  # psi = 0: the cohort is a uniform draw, identical to the no-history draw.
  np.testing.assert_array_equal(
      _psi(0.0).select_from_improved(2, last, improved),
      selection.UniformSelector(20, 5, seed=0).select(2))


def test_no_improved_client_means_uniform_fill():
  cohort = _psi(0.8).select_from_improved(2, np.arange(5), np.zeros(5, bool))
  assert len(cohort) == 5 == len(set(cohort))


def test_deterministic_per_seed_and_state_round_trips():
  last, improved = np.array([3, 4, 5, 6, 7]), np.array([1, 0, 1, 0, 1], bool)
  a = _psi(0.6, seed=9).select_from_improved(4, last, improved)
  b = _psi(0.6, seed=9).select_from_improved(4, last, improved)
  np.testing.assert_array_equal(a, b)
  selector = _psi(0.6, seed=9)
  cohort = selector.select(1)
  selector.observe_round(1, cohort, _measurements(np.ones(5), np.zeros(5)),
                         None)
  restored = _psi(0.6, seed=9)
  restored.set_state(selector.get_state())
  np.testing.assert_array_equal(selector.select(2), restored.select(2))
  assert restored.summary() == selector.summary()


def _recording_evaluator(losses):
  calls = []

  def evaluate(model_weights, cohort):
    calls.append((model_weights, list(cohort)))
    return np.asarray(losses, np.float32)

  return evaluate, calls


def test_global_reading_compares_the_new_global_model_with_the_received_one():
  # Loss under w^t (before), after own training (local), under w^{t+1}.
  before, local, new_global = [1.0, 1.0, 1.0, 1.0, 1.0], [0.5] * 5, [
      0.9, 1.2, 0.8, 1.0, 1.5]
  evaluate, calls = _recording_evaluator(new_global)
  selector = _psi(1.0, improvement=selection.GLOBAL, evaluate_cohort=evaluate)
  cohort = selector.select(1)
  selector.observe_round(1, cohort, _measurements(before, local), 'w2')
  assert calls == [('w2', list(cohort))]
  # Clients 0 and 2 improved under w^{t+1}; psi = 1 keeps both, and the
  # locally "improved" clients 1, 3, 4 are not kept for that.
  assert set(cohort[[0, 2]]) <= set(selector.select(2))
  assert selector.get_state()['improved'].tolist() == [1, 0, 1, 0, 0]
  assert selector.summary() == dict(psi=1.0, improvement='global',
                                    improved_fraction=0.4,
                                    local_improved_fraction=1.0)


def test_local_reading_compares_the_own_trained_model_with_the_received_one():
  selector = _psi(1.0, improvement=selection.LOCAL)
  cohort = selector.select(1)
  selector.observe_round(1, cohort, _measurements(
      [1.0, 1.0, 1.0, 1.0, 1.0], [0.5, 1.5, 0.5, 1.0, 0.9]), None)
  assert selector.get_state()['improved'].tolist() == [1, 0, 1, 0, 1]
  assert selector.summary()['improved_fraction'] == 0.6


def test_global_reading_needs_an_evaluator_and_readings_are_named():
  with pytest.raises(ValueError, match='evaluate_cohort'):
    _psi(0.8, improvement=selection.GLOBAL)
  with pytest.raises(errors.UserInputError, match='--psi_improvement'):
    _psi(0.8, improvement='sideways')


@pytest.mark.parametrize('psi', [-0.1, 1.5])
def test_psi_outside_unit_interval_names_the_flag(psi):
  with pytest.raises(errors.UserInputError, match='--psi'):
    _psi(psi)


def test_cohort_larger_than_population_names_the_flag():
  with pytest.raises(errors.UserInputError, match='--clients_per_round'):
    selection.PsiSelector(3, 4, 0.5, 0)
