"""Client selectors: uniform and Fed-Focal's psi rule (000 eqs. 7-13)."""

import numpy as np
import pytest

from tff_imbalance import errors
from tff_imbalance.learning import selection


def _psi(psi, num_clients=20, k=5, seed=0):
  return selection.PsiSelector(num_clients, k, psi, seed)


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


def test_psi_one_keeps_every_improved_client_and_psi_zero_keeps_none():
  last = np.array([0, 1, 2, 3, 4])
  improved = np.ones(5, bool)
  assert set(_psi(1.0).select_from_improved(2, last, improved)) == set(last)
  # psi = 0: the cohort is a uniform draw, identical to the no-history draw.
  selector = _psi(0.0)
  assert np.array_equal(
      np.sort(selector.select_from_improved(2, last, improved)),
      np.sort(_psi(0.0)._fill(np.zeros([0], np.int64),
                              np.random.default_rng([0, 2]))))


def test_no_improved_client_means_uniform_fill():
  cohort = _psi(0.8).select_from_improved(2, np.arange(5), np.zeros(5, bool))
  assert len(cohort) == 5 == len(set(cohort))


def test_deterministic_per_seed_and_state_round_trips():
  last, improved = np.array([3, 4, 5, 6, 7]), np.array([1, 0, 1, 0, 1], bool)
  a = _psi(0.6, seed=9).select_from_improved(4, last, improved)
  b = _psi(0.6, seed=9).select_from_improved(4, last, improved)
  np.testing.assert_array_equal(a, b)
  selector = _psi(0.6, seed=9)
  selector.select(1)
  restored = _psi(0.6, seed=9)
  restored.set_state(selector.get_state())
  report = dict(client_work=dict(round_report=dict(
      validation_loss_before=np.ones(5), validation_loss_after=np.zeros(5))))
  np.testing.assert_array_equal(selector.select(2, report),
                                restored.select(2, report))


@pytest.mark.parametrize('psi', [-0.1, 1.5])
def test_psi_outside_unit_interval_names_the_flag(psi):
  with pytest.raises(errors.UserInputError, match='--psi'):
    _psi(psi)


def test_cohort_larger_than_population_names_the_flag():
  with pytest.raises(errors.UserInputError, match='--clients_per_round'):
    selection.PsiSelector(3, 4, 0.5, 0)
