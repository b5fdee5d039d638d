"""Class-composition statistics of a federated split (002 sec 3.2).

Notation of Wang et al. (002 sec 3.2): client j holds N_i^j examples of class
i. Its local composition is the vector v_j = [N_1^j, ..., N_Q^j] and the global
composition is V = sum_j v_j. From these:

  * local imbalance   gamma_j = max_i N_i^j / min_i N_i^j  (infinite when a
    class is missing on client j, the paper's "extreme imbalance");
  * global imbalance  Gamma = max_i V_i / min_i V_i  (003 sec 3.2 uses the
    same ratio, there called n_max / n_min);
  * mismatch          CS_j = cos(v_j, V), 1 when client j looks like the
    union of all clients.

All functions are pure numpy. `class_counts` is also the label validator the
profile and partition modules share, so a bad label is reported the same way
everywhere.
"""

import math
from typing import Any, Optional, Sequence

import numpy as np

from tff_imbalance import errors


def validate_labels(labels: np.ndarray,
                    num_classes: Optional[int] = None) -> np.ndarray:
  """Checks that `labels` is a 1-D array of non-negative integer labels.

  Args:
    labels: class labels, one per example.
    num_classes: when given, every label must lie in [0, num_classes).

  Returns:
    `labels` as an int64 array of shape [N].

  Raises:
    errors.UserInputError: if `labels` is not 1-D, not of an integer dtype,
      holds a negative label or (with `num_classes`) a label >= num_classes.
  """
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise errors.UserInputError(
        f'labels must be a 1-D array of class ids (got shape {labels.shape}): '
        'pass one integer label per example.')
  if labels.size and not np.issubdtype(labels.dtype, np.integer):
    raise errors.UserInputError(
        f'labels must be integers (got dtype {labels.dtype}): convert class '
        'labels to int64 ids in [0, num_classes) before profiling or '
        'partitioning.')
  labels = labels.astype(np.int64, copy=False)
  if num_classes is not None:
    if num_classes < 1:
      raise errors.UserInputError(
          f'num_classes must be >= 1 (got {num_classes}): pass the number of '
          'classes of the dataset.')
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
  else:
    bad = np.flatnonzero(labels < 0)
  if bad.size:
    position = int(bad[0])
    upper = 'num_classes' if num_classes is None else num_classes
    raise errors.UserInputError(
        f'label {int(labels[position])} at position {position} lies outside '
        f'[0, {upper}) ({bad.size} bad label(s) in all): labels must be class '
        'ids in [0, num_classes); check the data source or num_classes.')
  return labels


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """Number of examples of each class.

  Args:
    labels: int labels of shape [N], values in [0, num_classes).
    num_classes: the number of classes C.

  Returns:
    int64 array of shape [C]; entry c counts the examples with label c.

  Raises:
    errors.UserInputError: if a label lies outside [0, num_classes) or
      `num_classes` < 1.
  """
  labels = validate_labels(labels, num_classes)
  return np.bincount(labels, minlength=num_classes).astype(np.int64)


def client_class_counts(labels: np.ndarray,
                        partition: Sequence[np.ndarray],
                        num_classes: int) -> np.ndarray:
  """Per-client class counts N_i^j.

  Args:
    labels: int labels of shape [N], values in [0, num_classes).
    partition: one index array per client, positions into `labels`.
    num_classes: the number of classes C.

  Returns:
    int64 array of shape [K, C]; row j is client j's composition v_j.

  Raises:
    errors.UserInputError: on a bad label or an index outside [0, N).
  """
  labels = validate_labels(labels, num_classes)
  counts = np.zeros((len(partition), num_classes), dtype=np.int64)
  for j, indices in enumerate(partition):
    indices = np.asarray(indices, dtype=np.int64)
    bad = indices[(indices < 0) | (indices >= labels.size)]
    if bad.size:
      raise errors.UserInputError(
          f'client {j} holds index {int(bad[0])}, outside [0, {labels.size}): '
          'a partition must index the same labels array that is passed with '
          'it.')
    counts[j] = np.bincount(labels[indices], minlength=num_classes)
  return counts


def _ratio_max_min(counts: np.ndarray) -> np.ndarray:
  """max / min along the last axis; inf where the minimum is 0."""
  counts = np.asarray(counts, dtype=np.float64)
  largest = counts.max(axis=-1)
  smallest = counts.min(axis=-1)
  with np.errstate(divide='ignore', invalid='ignore'):
    ratio = largest / smallest
  # 002 sec 3.2: a missing class (min = 0) is "extreme imbalance"; report it
  # as inf also when the client is empty (0 / 0).
  return np.where(smallest > 0, ratio, np.inf)


def global_imbalance(counts: np.ndarray) -> float:
  """Gamma = max_i V_i / min_i V_i (002 sec 3.2; 003 sec 3.2).

  Args:
    counts: global class counts V of shape [C].

  Returns:
    The ratio as a float; inf when some class has no examples.
  """
  counts = np.asarray(counts)
  if counts.ndim != 1 or counts.size == 0:
    raise errors.UserInputError(
        f'global_imbalance needs class counts of shape [C] (got shape '
        f'{counts.shape}): pass class_counts(labels, num_classes).')
  return float(_ratio_max_min(counts))


def local_imbalance(client_counts: np.ndarray) -> np.ndarray:
  """gamma_j = max_i N_i^j / min_i N_i^j for every client (002 sec 3.2).

  Args:
    client_counts: per-client class counts of shape [K, C].

  Returns:
    float64 array of shape [K]; inf for clients missing a class.
  """
  client_counts = _as_matrix(client_counts)
  return _ratio_max_min(client_counts)


def composition_mismatch(client_counts: np.ndarray) -> np.ndarray:
  """CS_j = (v_j . V) / (|v_j| |V|), V the column sums (002 sec 3.2).

  Args:
    client_counts: per-client class counts of shape [K, C].

  Returns:
    float64 array of shape [K] with values in [0, 1]; NaN for a client with no
    examples (the cosine of a zero vector is undefined).
  """
  client_counts = _as_matrix(client_counts).astype(np.float64)
  total = client_counts.sum(axis=0)
  norms = np.linalg.norm(client_counts, axis=1) * np.linalg.norm(total)
  with np.errstate(divide='ignore', invalid='ignore'):
    return np.where(norms > 0, client_counts @ total / norms, np.nan)


def composition(counts: np.ndarray) -> np.ndarray:
  """Class proportions: counts divided by their total along the last axis.

  Args:
    counts: class counts of shape [C] or [K, C].

  Returns:
    float64 array of the same shape whose last axis sums to 1; all zeros where
    the total is 0.
  """
  counts = np.asarray(counts, dtype=np.float64)
  totals = counts.sum(axis=-1, keepdims=True)
  with np.errstate(divide='ignore', invalid='ignore'):
    return np.where(totals > 0, counts / totals, 0.0)


def _as_matrix(client_counts: np.ndarray) -> np.ndarray:
  client_counts = np.asarray(client_counts)
  if client_counts.ndim != 2 or client_counts.shape[1] == 0:
    raise errors.UserInputError(
        f'per-client class counts must have shape [K, C] (got shape '
        f'{client_counts.shape}): pass client_class_counts(labels, partition, '
        'num_classes).')
  return client_counts


def _finite_or_none(value: float) -> Optional[float]:
  # Strict JSON has no Infinity or NaN; None marks "infinite / undefined".
  return float(value) if math.isfinite(value) else None


def summarize(labels: np.ndarray,
              partition: Sequence[np.ndarray],
              num_classes: int) -> dict[str, Any]:
  """A JSON-ready summary of a federated split.

  The global counts are those of the examples the clients hold (the paper's
  V = sum_j v_j), not of the whole `labels` array.

  Args:
    labels: int labels of shape [N], values in [0, num_classes).
    partition: one index array per client, positions into `labels`.
    num_classes: the number of classes C.

  Returns:
    A dict of plain Python values:
      num_clients, num_classes, num_examples: ints.
      global_counts: list of C ints.
      global_imbalance: Gamma as a float, or None when a class has no examples
        (infinite); num_missing_classes says how many.
      client_size_mean (float), client_size_min, client_size_max (ints).
      mean_composition_similarity: mean CS_j over non-empty clients (None if
        every client is empty).
      fraction_clients_missing_class: share of clients with gamma_j = inf.
  """
  per_client = client_class_counts(labels, partition, num_classes)
  totals = per_client.sum(axis=0)
  sizes = per_client.sum(axis=1)
  similarity = composition_mismatch(per_client)
  similarity = similarity[~np.isnan(similarity)]
  missing = (per_client == 0).any(axis=1)
  return {
      'num_clients': len(partition),
      'num_classes': int(num_classes),
      'num_examples': int(sizes.sum()),
      'global_counts': [int(n) for n in totals],
      'global_imbalance': _finite_or_none(global_imbalance(totals)),
      'num_missing_classes': int((totals == 0).sum()),
      'client_size_mean': float(sizes.mean()) if sizes.size else 0.0,
      'client_size_min': int(sizes.min()) if sizes.size else 0,
      'client_size_max': int(sizes.max()) if sizes.size else 0,
      'mean_composition_similarity': (
          float(similarity.mean()) if similarity.size else None),
      'fraction_clients_missing_class': (
          float(missing.mean()) if missing.size else 0.0),
  }
