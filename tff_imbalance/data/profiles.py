"""Class profiles: which training examples survive before partitioning.

Two imbalance profiles from the seed papers:

  * Long tail (004 eq. 17; 003 sec 6.1.1): class c keeps
    n_c = n_max * IR^(-c/(C-1)) examples, an exponential decay from the head
    class 0 (n_max) to the tail class C-1 (n_max / IR).
  * Long tail from the mean class size (004 eq. 17 with the reference codes'
    n_0): class c keeps n_c = min(N_c, n_0 * IR^(-c/(C-1))) with
    n_0 = N / C, N the source's training examples and N_c what class c has
    (CReFF's `img_max`; on full MNIST IR 100 keeps 14,809 digits).
  * k-minority (000 sec 4.2): a named set of minority classes is cut to 1/r of
    a majority class ("digits 0,1,2,9 at 1:100" on MNIST, 1:10 on FEMNIST);
    the other classes keep everything.

Counts are computed first (`*_counts`), then `select_by_counts` draws a
uniformly random subset of exactly that many examples per class. Both steps
are pure numpy and seeded; the result is an index array into the source's
training labels.
"""

import math
from typing import Optional, Sequence

import numpy as np

from tff_imbalance import errors
from tff_imbalance.data import stats

# 000 sec 4.2: the "unbalanced" MNIST/FEMNIST benchmarks cut digits 0, 1, 2, 9.
MNIST_UNBALANCED_MINORITY = (0, 1, 2, 9)

# Guard against float error in IR^(-c/(C-1)) when truncating: 5000 * 100^-1
# must give 50, not 49.
_FLOOR_TOLERANCE = 1e-9


def longtail_counts(n_max: int, num_classes: int,
                    imbalance_ratio: float) -> np.ndarray:
  """Per-class sizes of an exponential long tail (004 eq. 17; 003 6.1.1).

  n_c = int(n_max * IR^(-c/(C-1))) for c = 0..C-1, at least 1, so class 0 is
  the head with n_max examples and class C-1 the tail with about n_max / IR.
  IR = 1 gives n_max for every class. When IR > n_max the tail classes are
  clamped to 1 example, so the realised ratio is n_max rather than IR.

  Args:
    n_max: size of the head class, >= 1.
    num_classes: number of classes C, >= 2.
    imbalance_ratio: IR = n_max / n_min, >= 1.

  Returns:
    int64 array of shape [C], non-increasing.

  Raises:
    errors.UserInputError: if an argument is out of range.
  """
  if not n_max >= 1:
    raise errors.UserInputError(
        f'--n_max must be >= 1 (got {n_max}): pass the number of examples '
        'the head class keeps, or leave it unset to use the smallest '
        'available class.')
  if not num_classes >= 2:
    raise errors.UserInputError(
        f'num_classes must be >= 2 for a long tail (got {num_classes}): a '
        'long-tail profile needs a head and a tail class.')
  if not (math.isfinite(imbalance_ratio) and imbalance_ratio >= 1):
    raise errors.UserInputError(
        f'--imbalance_ratio must be >= 1 (got {imbalance_ratio}): pass a '
        'ratio n_max/n_min such as 10 or 100.')
  return _decay(n_max, num_classes, imbalance_ratio)


def _decay(n_0: float, num_classes: int,
           imbalance_ratio: float) -> np.ndarray:
  """max(1, int(n_0 * IR^(-c/(C-1)))) for c = 0..C-1 (004 eq. 17)."""
  exponents = -np.arange(num_classes, dtype=np.float64) / (num_classes - 1)
  sizes = n_0 * np.power(float(imbalance_ratio), exponents)
  counts = np.floor(sizes + _FLOOR_TOLERANCE).astype(np.int64)
  return np.maximum(counts, 1)


def capped_longtail_counts(available_counts: np.ndarray,
                           imbalance_ratio: float,
                           n_0: Optional[float] = None) -> np.ndarray:
  """Long tail from the mean class size, capped by what each class has.

  004 eq. 17, n_c = n_0 * (1/IR)^(c/(C-1)), with the n_0 of CReFF's code
  (`img_max = N / C`, `Dataset/long_tailed_cifar10.py`), which is also the
  size of every class of a balanced dataset (CIFAR). MNIST's classes differ
  in size, so a class keeps at most what it has:

    n_c = min(N_c, int(n_0 * IR^(-c/(C-1)))),  n_0 = N / C.

  On full MNIST (N = 60,000, n_0 = 6,000) at IR 100 this keeps 5923, 3596,
  2156, 1292, 774, 464, 278, 166, 100, 60: 14,809 digits (only the head class
  is capped, 5,923 < 6,000). Unlike `longtail_counts`, the head is not cut to
  the smallest class, and unlike RedGrape's code (`exp_long_tail`, which
  scales each class's own N_c) the realised ratio stays IR.

  Args:
    available_counts: int array [C], examples available per class (N_c).
    imbalance_ratio: IR >= 1.
    n_0: head size before the cap; default N / C with N = sum(N_c). Pass the
      source's N / C when some examples were held out first.

  Returns:
    int64 array [C], elementwise <= `available_counts`.

  Raises:
    errors.UserInputError: on bad counts, IR < 1, n_0 < 1 or C < 2.
  """
  available = np.asarray(available_counts, dtype=np.int64)
  if available.ndim != 1 or np.any(available < 0):
    raise errors.UserInputError(
        f'available_counts must be non-negative counts of shape [C] (got '
        f'{available_counts!r}): pass class_counts(labels, num_classes).')
  if n_0 is None:
    n_0 = available.sum() / max(available.size, 1)
  if not (math.isfinite(n_0) and n_0 >= 1):
    raise errors.UserInputError(
        f'the long tail\'s n_0 = N/C must be >= 1 (got {n_0}): the source has '
        'fewer training examples than classes.')
  # longtail_counts checks C and IR with the messages users know.
  longtail_counts(1, available.size, imbalance_ratio)
  return np.minimum(available, _decay(n_0, available.size, imbalance_ratio))


def kminority_counts(available_counts: np.ndarray,
                     minority_classes: Sequence[int],
                     ratio: float) -> np.ndarray:
  """Per-class sizes with a set of minority classes cut to 1:ratio (000 4.2).

  Classes outside `minority_classes` keep all their available examples. Each
  minority class keeps max(1, int(n_major / ratio)) examples, where n_major is
  the largest available count among the non-minority classes ("1:100" means a
  minority class holds 1/100 of a majority class), but never more than it has.

  Args:
    available_counts: int array of shape [C], examples available per class.
    minority_classes: class ids to cut; duplicates are ignored.
    ratio: r in "1:r", >= 1.

  Returns:
    int64 array of shape [C], elementwise <= `available_counts`.

  Raises:
    errors.UserInputError: if `ratio` < 1, a class id is outside [0, C), or
      every class is a minority class.
  """
  available = np.asarray(available_counts, dtype=np.int64)
  num_classes = available.size
  if available.ndim != 1 or np.any(available < 0):
    raise errors.UserInputError(
        f'available_counts must be non-negative counts of shape [C] (got '
        f'{available_counts!r}): pass class_counts(labels, num_classes).')
  if not (math.isfinite(ratio) and ratio >= 1):
    raise errors.UserInputError(
        f'--minority_ratio must be >= 1 (got {ratio}): pass r of "1:r", e.g. '
        '100 for MNIST or 10 for FEMNIST (000 sec 4.2).')
  minority = np.unique(np.asarray(list(minority_classes), dtype=np.int64))
  bad = minority[(minority < 0) | (minority >= num_classes)]
  if bad.size:
    raise errors.UserInputError(
        f'--minority_classes holds class {int(bad[0])}, outside [0, '
        f'{num_classes}): name class ids of this dataset, e.g. 0,1,2,9.')
  is_minority = np.zeros(num_classes, dtype=bool)
  is_minority[minority] = True
  if is_minority.all():
    raise errors.UserInputError(
        f'--minority_classes names all {num_classes} classes: leave at least '
        'one majority class to measure the 1:r ratio against.')
  n_major = int(available[~is_minority].max())
  kept = max(1, int(n_major / ratio))
  return np.where(is_minority, np.minimum(available, kept),
                  available).astype(np.int64)


def select_by_counts(labels: np.ndarray, target_counts: np.ndarray,
                     seed: int) -> np.ndarray:
  """A uniformly random subset with exactly `target_counts[c]` of class c.

  Args:
    labels: int labels of shape [N], values in [0, C).
    target_counts: int array of shape [C], examples to keep per class.
    seed: seed of the random subset.

  Returns:
    Sorted int64 indices into `labels`.

  Raises:
    errors.UserInputError: if a class has fewer examples than asked for, a
      target is negative, or a label is outside [0, C).
  """
  targets = np.asarray(target_counts, dtype=np.int64)
  if targets.ndim != 1 or targets.size == 0 or np.any(targets < 0):
    raise errors.UserInputError(
        f'target_counts must be non-negative counts of shape [C] (got '
        f'{target_counts!r}): pass one count per class.')
  labels = stats.validate_labels(labels, targets.size)
  available = np.bincount(labels, minlength=targets.size)
  short = np.flatnonzero(available < targets)
  if short.size:
    c = int(short[0])
    raise errors.UserInputError(
        f'class {c} has {int(available[c])} examples but the profile asks for '
        f'{int(targets[c])}: lower --n_max (or the imbalance ratio) so that '
        'every class can meet its target.')
  rng = np.random.default_rng(seed)
  # Group example positions by class once (stable, so order is reproducible).
  by_class = np.argsort(labels, kind='stable')
  starts = np.concatenate([[0], np.cumsum(available)])
  chosen = [
      rng.choice(by_class[starts[c]:starts[c + 1]], size=targets[c],
                 replace=False)
      for c in range(targets.size)
  ]
  return np.sort(np.concatenate(chosen)).astype(np.int64)


def longtail_indices(labels: np.ndarray,
                     num_classes: int,
                     imbalance_ratio: float,
                     seed: int,
                     n_max: Optional[int] = None) -> np.ndarray:
  """Indices of a long-tailed subset of `labels` (004 eq. 17; 003 6.1.1).

  Args:
    labels: int labels of shape [N], values in [0, num_classes).
    num_classes: number of classes C.
    imbalance_ratio: IR = n_max / n_min, >= 1.
    seed: seed of the per-class random subsets.
    n_max: size of the head class (class 0). Defaults to the smallest
      available class count, so that every class can meet its target and the
      profile shape does not depend on which class happens to be largest.

  Returns:
    Sorted int64 indices into `labels`.

  Raises:
    errors.UserInputError: on a bad argument, a class with no examples, or a
      class with fewer examples than its target.
  """
  available = stats.class_counts(labels, num_classes)
  if n_max is None:
    n_max = int(available.min())
    if n_max == 0:
      missing = int(np.flatnonzero(available == 0)[0])
      raise errors.UserInputError(
          f'class {missing} has no examples, so no long tail over '
          f'{num_classes} classes exists: check num_classes or the source.')
  targets = longtail_counts(n_max, num_classes, imbalance_ratio)
  return select_by_counts(labels, targets, seed)


def capped_longtail_indices(labels: np.ndarray,
                            num_classes: int,
                            imbalance_ratio: float,
                            seed: int,
                            n_0: Optional[float] = None) -> np.ndarray:
  """Indices of a long tail with n_0 = N / C (see `capped_longtail_counts`).

  Args:
    labels: int labels of shape [N], values in [0, num_classes).
    num_classes: number of classes C.
    imbalance_ratio: IR >= 1.
    seed: seed of the per-class random subsets.
    n_0: the head size before the cap; default len(labels) / C.

  Returns:
    Sorted int64 indices into `labels`.

  Raises:
    errors.UserInputError: on a bad argument.
  """
  available = stats.class_counts(labels, num_classes)
  targets = capped_longtail_counts(available, imbalance_ratio, n_0)
  return select_by_counts(labels, targets, seed)


def kminority_indices(labels: np.ndarray,
                      num_classes: int,
                      minority_classes: Sequence[int],
                      ratio: float,
                      seed: int) -> np.ndarray:
  """Indices of a subset with `minority_classes` cut to 1:ratio (000 4.2).

  Args:
    labels: int labels of shape [N], values in [0, num_classes).
    num_classes: number of classes C.
    minority_classes: class ids to cut, e.g. `MNIST_UNBALANCED_MINORITY`.
    ratio: r in "1:r", >= 1.
    seed: seed of the per-class random subsets.

  Returns:
    Sorted int64 indices into `labels`.

  Raises:
    errors.UserInputError: on a bad argument (see `kminority_counts`).
  """
  available = stats.class_counts(labels, num_classes)
  targets = kminority_counts(available, minority_classes, ratio)
  return select_by_counts(labels, targets, seed)
