"""The statistics of `bench.reproduce --table=fedavg_check`."""

import pytest

from bench import fedavg_check


def test_the_criterion_is_the_mean_of_seeds_0_to_2_within_2_points():
  # Seeds 0-2 average 0.67: 2.0 points under 0.69, just within; seed 3's
  # 0.99 is not part of it.
  assert fedavg_check.criterion([0.70, 0.66, 0.65, 0.99], 0.69) == (
      '-2.0 (yes)')
  assert fedavg_check.criterion([0.66, 0.66, 0.66], 0.69) == '-3.0 (no)'
  assert fedavg_check.criterion([0.85, 0.84, 0.83], 0.82) == '+2.0 (yes)'


def test_the_difference_carries_its_standard_error():
  # Means 0.6 and 0.4; sample variances 0.02 and 0:
  # sqrt(0.02 / 2 + 0 / 3) = 0.1.
  assert fedavg_check.difference_with_error([0.5, 0.7], [0.4, 0.4, 0.4]) == (
      '+20.0 ± 10.0')
  assert fedavg_check.difference_with_error([0.3], [0.4, 0.5]) == '-15.0'


def test_subsets_count_every_three_seeds_meeting_every_measure():
  runs = [[0.5, 0.9], [0.5, 0.9], [0.5, 0.9], [0.6, 0.9]]
  # Only seeds {0, 1, 2} average 0.5; with seed 3 the first measure is 3.3
  # points off.
  assert fedavg_check.subsets_within(runs, (0.5, 0.9)) == (1, 4)
  # The second measure 5 points off fails every subset.
  assert fedavg_check.subsets_within(runs, (0.5, 0.85)) == (0, 4)
  assert fedavg_check.subsets_within(runs[:2], (0.5, 0.9)) is None


def test_the_references_follow_the_measures():
  assert len(fedavg_check.REFERENCES) == len(fedavg_check.MEASURES)
  summary = {'history': [{'round': r, 'balanced_accuracy': r / 100}
                         for r in (5, 15, 30)],
             'minority_accuracy': 0.7}
  assert [measure(summary) for measure in fedavg_check.MEASURES.values()] == (
      pytest.approx([0.05, 0.15, 0.30, 0.7]))
