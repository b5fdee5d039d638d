"""Tests for tff_imbalance.data.profiles: exact long-tail and k-minority counts.

Expected counts are worked out by hand in the comments, not recomputed with
the formula under test.
"""

import numpy as np
import pytest

from tff_imbalance import errors
from tff_imbalance.data import profiles

# MNIST's training-set class counts (digits 0..9).
_MNIST_TRAIN_COUNTS = np.array(
    [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])


def _labels(counts):
  """Labels with counts[c] examples of class c, classes interleaved."""
  labels = np.repeat(np.arange(len(counts)), counts)
  return np.random.default_rng(123).permutation(labels)


def test_longtail_counts_ir100_n100():
  # 100 * 10^(-2c/9): 100, 59.9, 35.9, 21.5, 12.9, 7.7, 4.6, 2.8, 1.7, 1.0.
  np.testing.assert_array_equal(
      profiles.longtail_counts(100, 10, 100),
      [100, 59, 35, 21, 12, 7, 4, 2, 1, 1])


def test_longtail_counts_cifar10_lt():
  # The standard CIFAR-10-LT profile at IR=100 (BalanceFL, CReFF, RedGrape);
  # the tail is exactly 5000/100 = 50 despite float error in 100^-1.
  np.testing.assert_array_equal(
      profiles.longtail_counts(5000, 10, 100),
      [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])


def test_longtail_counts_ir10():
  # 500 * 10^(-c/9): 500, 387.1, 299.7, 232.1, 179.7, 139.1, 107.7, 83.4,
  # 64.6, 50.0.
  np.testing.assert_array_equal(
      profiles.longtail_counts(500, 10, 10),
      [500, 387, 299, 232, 179, 139, 107, 83, 64, 50])


def test_longtail_counts_ir1_is_flat():
  counts = profiles.longtail_counts(37, 5, 1)
  np.testing.assert_array_equal(counts, [37] * 5)
  assert counts.dtype == np.int64


def test_longtail_counts_every_class_keeps_one():
  # 10 * 1000^(-c/4): 10, 1.78, 0.32, 0.06, 0.01 -> the tail is clamped to 1.
  np.testing.assert_array_equal(
      profiles.longtail_counts(10, 5, 1000), [10, 1, 1, 1, 1])


@pytest.mark.parametrize('n_max,num_classes,ratio,name', [
    (100, 10, 0.5, '--imbalance_ratio'),
    (100, 10, float('nan'), '--imbalance_ratio'),
    (0, 10, 10, '--n_max'),
    (100, 1, 10, 'num_classes'),
])
def test_longtail_counts_bad_input(n_max, num_classes, ratio, name):
  with pytest.raises(errors.UserInputError, match=name):
    profiles.longtail_counts(n_max, num_classes, ratio)


def test_kminority_counts_mnist_1_to_100():
  # Largest non-minority class: digit 7 with 6265 -> int(62.65) = 62.
  counts = profiles.kminority_counts(
      _MNIST_TRAIN_COUNTS, profiles.MNIST_UNBALANCED_MINORITY, 100)
  np.testing.assert_array_equal(
      counts, [62, 62, 62, 6131, 5842, 5421, 5918, 6265, 5851, 62])
  assert counts.dtype == np.int64


def test_kminority_counts_never_more_than_available():
  # 500 / 100 = 5 but class 0 only has 3.
  np.testing.assert_array_equal(
      profiles.kminority_counts(np.array([3, 500, 500]), [0], 100),
      [3, 500, 500])
  # 500 / 1000 = 0.5 -> at least 1.
  np.testing.assert_array_equal(
      profiles.kminority_counts(np.array([300, 500, 500]), [0, 0], 1000),
      [1, 500, 500])


@pytest.mark.parametrize('minority,ratio,name', [
    ([0], 0.5, '--minority_ratio'),
    ([3], 10, '--minority_classes'),
    ([-1], 10, '--minority_classes'),
    ([0, 1, 2], 10, '--minority_classes'),
])
def test_kminority_counts_bad_input(minority, ratio, name):
  with pytest.raises(errors.UserInputError, match=name):
    profiles.kminority_counts(np.array([10, 10, 10]), minority, ratio)


def test_select_by_counts_exact_and_sorted():
  labels = _labels([20, 30, 10])
  chosen = profiles.select_by_counts(labels, np.array([5, 0, 10]), seed=4)
  assert chosen.dtype == np.int64
  np.testing.assert_array_equal(chosen, np.unique(chosen))
  np.testing.assert_array_equal(np.bincount(labels[chosen], minlength=3),
                                [5, 0, 10])


def test_select_by_counts_is_seeded():
  labels = _labels([200, 300, 100])
  targets = np.array([50, 60, 70])
  first = profiles.select_by_counts(labels, targets, seed=1)
  np.testing.assert_array_equal(
      first, profiles.select_by_counts(labels, targets, seed=1))
  assert not np.array_equal(
      first, profiles.select_by_counts(labels, targets, seed=2))


def test_select_by_counts_too_few_names_class_and_counts():
  labels = _labels([20, 30, 3])
  with pytest.raises(errors.UserInputError,
                     match=r'class 2 has 3 examples .* asks for 5'):
    profiles.select_by_counts(labels, np.array([5, 5, 5]), seed=0)


def test_select_by_counts_rejects_bad_label():
  with pytest.raises(errors.UserInputError, match='label 3'):
    profiles.select_by_counts(np.array([0, 1, 3]), np.array([1, 1, 0]), 0)


def test_longtail_indices_defaults_n_max_to_smallest_class():
  labels = _labels([50, 40, 60, 45])
  chosen = profiles.longtail_indices(labels, 4, 10, seed=0)
  # n_max = 40; 40 * 10^(-c/3): 40, 18.6, 8.6, 4.0.
  np.testing.assert_array_equal(np.bincount(labels[chosen]), [40, 18, 8, 4])


def test_longtail_indices_explicit_n_max_too_large():
  labels = _labels([50, 40, 60, 45])
  with pytest.raises(errors.UserInputError, match='class 0 has 50'):
    profiles.longtail_indices(labels, 4, 10, seed=0, n_max=55)


def test_longtail_indices_missing_class():
  with pytest.raises(errors.UserInputError, match='class 2 has no examples'):
    profiles.longtail_indices(_labels([5, 5]), 3, 10, seed=0)


def test_capped_longtail_full_mnist_ir100_is_14809():
  # n_0 = 60000 / 10 = 6000; 6000 * 100^(-c/9) = 6000, 3596.4, 2155.4,
  # 1292.0 (1291.9995...: the tolerance keeps it), 774.3, 464.2, 278.2,
  # 166.7, 100.0, 59.9 (floored); class 0 is capped by its 5,923 digits.
  counts = profiles.capped_longtail_counts(_MNIST_TRAIN_COUNTS, 100)
  np.testing.assert_array_equal(
      counts, [5923, 3596, 2156, 1292, 774, 464, 278, 166, 100, 60])
  assert counts.sum() == 14809


def test_capped_longtail_explicit_n0_and_cap():
  # n_0 = 100 (not (3 + 200 + 200) / 3): 100, 31.6 -> 31, 10; class 0 has 3.
  np.testing.assert_array_equal(
      profiles.capped_longtail_counts([3, 200, 200], 10, n_0=100), [3, 31, 10])
  labels = _labels([3, 200, 200])
  kept = profiles.capped_longtail_indices(labels, 3, 10, seed=0, n_0=100)
  np.testing.assert_array_equal(np.bincount(labels[kept]), [3, 31, 10])
  with pytest.raises(errors.UserInputError, match='--imbalance_ratio'):
    profiles.capped_longtail_counts([3, 200, 200], 0.5)
  with pytest.raises(errors.UserInputError, match='n_0'):
    profiles.capped_longtail_counts([3, 200, 200], 10, n_0=0.5)


def test_kminority_indices_mnist_digits():
  labels = _labels([200] * 10)
  chosen = profiles.kminority_indices(
      labels, 10, profiles.MNIST_UNBALANCED_MINORITY, 100, seed=3)
  # 200 / 100 = 2 for digits 0, 1, 2, 9.
  np.testing.assert_array_equal(
      np.bincount(labels[chosen]), [2, 2, 2, 200, 200, 200, 200, 200, 200, 2])


def test_pixel_noise_matches_the_papers_recipe():
  from tff_imbalance.data import arrays
  from tff_imbalance.data import transforms
  x = np.zeros((2000, 4, 4, 1), np.float32)
  x[1000:] = 1.0
  noisy = transforms.add_pixel_noise(
      arrays.LabeledArrays(x=x, y=np.zeros(2000, np.int64)), 10.0, 5.0, seed=1)
  dark, bright = noisy.x[:1000] * 255, noisy.x[1000:] * 255
  assert abs(dark.mean() - 10.0) < 0.2 and abs(dark.std() - 5.0) < 0.2
  assert bright.max() == 255.0  # clipped at white
  assert noisy.x.dtype == np.float32
  again = transforms.add_pixel_noise(
      arrays.LabeledArrays(x=x, y=np.zeros(2000, np.int64)), 10.0, 5.0, seed=1)
  np.testing.assert_array_equal(noisy.x, again.x)
