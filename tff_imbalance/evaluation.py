"""Balanced test metrics for classifiers trained on imbalanced data.

`classification_metrics` turns test labels and model logits into the metrics
the long-tail and federated-imbalance literature report: overall and balanced
accuracy, per-class accuracy, many/medium/few-shot accuracy (grouped by the
number of TRAINING examples per class), minority-class accuracy (Ac.M),
macro-F1 and one-vs-rest AUC. Every value is a plain Python number, list,
dict or None, so the result can be written with `json.dump` as it is.

Classes absent from the test set have no accuracy; they are reported as None
and left out of every mean, and a mean over no classes is None (never NaN).
"""

from collections.abc import Sequence
import numbers
from typing import Any, Optional

import numpy as np
from scipy import special
from sklearn import metrics as sk_metrics
import tensorflow as tf

from tff_imbalance import errors

# Share of classes, counted from the smallest, that forms the default
# minority set; 0.3 reproduces RedGrape's tail (classes >= int(0.7 C) of a
# head-first long-tailed profile).
DEFAULT_MINORITY_FRACTION = 0.3


def default_minority_classes(train_class_counts: np.ndarray) -> list[int]:
  """The classes in the bottom 30% by training count.

  Sorts classes by training count, descending, with ties kept in class order,
  and returns the last int(0.3 * C) of them (so none when C < 4). For a
  head-first long-tailed profile with 10 classes this is [7, 8, 9].

  Args:
    train_class_counts: training examples per class, shape [C].

  Returns:
    The minority class indices, in ascending order.
  """
  counts = np.asarray(train_class_counts)
  num_minority = int(DEFAULT_MINORITY_FRACTION * len(counts))
  if num_minority == 0:
    return []
  order = np.argsort(-counts, kind='stable')
  return sorted(int(c) for c in order[-num_minority:])


def _validated_inputs(
    labels: np.ndarray, logits: np.ndarray, train_class_counts: np.ndarray,
    minority_classes: Optional[Sequence[int]], many_shot_threshold: int,
    few_shot_threshold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Checks shapes and ranges; returns labels, logits and counts as arrays."""
  counts = np.asarray(train_class_counts)
  if counts.ndim != 1 or counts.size < 2 or np.any(counts < 0):
    raise errors.UserInputError(
        f'train_class_counts must be a 1-D array of C >= 2 non-negative counts '
        f'(got shape {counts.shape}); pass the training examples per class.')
  num_classes = counts.size
  labels = np.asarray(labels)
  if labels.ndim != 1 or labels.size == 0:
    raise errors.UserInputError(
        f'labels must be a non-empty 1-D array of class indices (got shape '
        f'{labels.shape}).')
  if not np.issubdtype(labels.dtype, np.integer):
    raise errors.UserInputError(
        f'labels must have an integer dtype (got {labels.dtype}); pass class '
        f'indices, not one-hot vectors or floats.')
  if labels.min() < 0 or labels.max() >= num_classes:
    raise errors.UserInputError(
        f'labels must lie in [0, {num_classes}) where {num_classes} = '
        f'len(train_class_counts) (got range [{labels.min()}, '
        f'{labels.max()}]); check num_classes against the data.')
  logits = np.asarray(logits, dtype=np.float64)
  if logits.shape != (labels.size, num_classes):
    raise errors.UserInputError(
        f'logits must have shape [N, C] = [{labels.size}, {num_classes}] to '
        f'match labels and train_class_counts (got {logits.shape}).')
  if minority_classes is not None:
    bad = [c for c in minority_classes
           if not isinstance(c, numbers.Integral) or not 0 <= c < num_classes]
    if bad:
      raise errors.UserInputError(
          f'minority_classes must be class indices in [0, {num_classes}) '
          f'(got {bad!r}).')
  if not 0 <= few_shot_threshold <= many_shot_threshold:
    raise errors.UserInputError(
        f'need 0 <= few_shot_threshold <= many_shot_threshold (got '
        f'{few_shot_threshold} and {many_shot_threshold}).')
  return labels.astype(np.int64), logits, counts


def _mean_or_none(values: Sequence[Optional[float]]) -> Optional[float]:
  """The mean of the non-None values; None when there are none."""
  present = [v for v in values if v is not None]
  return float(np.mean(present)) if present else None


def _ovr_macro_auc(labels: np.ndarray, logits: np.ndarray) -> Optional[float]:
  """One-vs-rest macro ROC AUC over the classes present in `labels`.

  Each present class c scores softmax(logits)[:, c] against "label == c";
  the result is the unweighted mean of these binary AUCs, which is what
  sklearn's `roc_auc_score(..., multi_class='ovr', average='macro')` computes
  when every class is present. Computing it per class avoids sklearn's
  requirement that the scores of the listed classes sum to 1, which fails
  once absent classes are dropped.

  Args:
    labels: [N] class indices.
    logits: [N, C] logits.

  Returns:
    The AUC, or None when fewer than 2 classes are present or a logit is not
    finite (a diverged model has no meaningful ranking).
  """
  present = np.unique(labels)
  if present.size < 2 or not np.all(np.isfinite(logits)):
    return None
  probs = special.softmax(logits, axis=1)
  aucs = [sk_metrics.roc_auc_score(labels == c, probs[:, c]) for c in present]
  return float(np.mean(aucs))


def classification_metrics(
    labels: np.ndarray,
    logits: np.ndarray,
    train_class_counts: np.ndarray,
    minority_classes: Optional[Sequence[int]] = None,
    many_shot_threshold: int = 100,
    few_shot_threshold: int = 20) -> dict[str, Any]:
  """Balanced test metrics from labels and logits.

  Shot groups follow the long-tail literature (Liu et al. 2019, "OLTR";
  BalanceFL's `shot_acc`), by training count n_c: many-shot n_c >
  `many_shot_threshold`, medium-shot `few_shot_threshold` <= n_c <=
  `many_shot_threshold`, few-shot n_c < `few_shot_threshold`. A group's
  accuracy is the mean per-class accuracy over its classes present in the
  test set.

  Args:
    labels: test labels, integer array [N] with values in [0, C).
    logits: model outputs [N, C] (logits or any monotone scores; AUC applies
      a softmax).
    train_class_counts: training examples per class [C]; C is its length.
    minority_classes: the classes whose mean accuracy is `minority_accuracy`
      (Ac.M). None means the bottom 30% by training count: the last
      int(0.3 * C) classes when sorted by count descending, ties in class
      order (see `default_minority_classes`); none at all when C < 4.
    many_shot_threshold: classes with more training examples are many-shot.
    few_shot_threshold: classes with fewer training examples are few-shot.

  Returns:
    A JSON-able dict with keys
      accuracy: fraction of test examples classified correctly.
      balanced_accuracy: mean per-class recall over classes in the test set.
      per_class_accuracy: list of C floats, None for classes not in the test
        set.
      many_shot_accuracy, medium_shot_accuracy, few_shot_accuracy: group
        means, None for a group without test classes.
      minority_accuracy: mean per-class accuracy over the minority classes
        present in the test set, or None.
      macro_f1: sklearn macro F1 over classes in labels or predictions
        (zero_division=0).
      auc: one-vs-rest macro ROC AUC over classes in the test set; None with
        fewer than 2 such classes or non-finite logits.
      num_examples: N.
      shot_counts: {'many', 'medium', 'few'} -> number of classes in each
        group by training count (whether or not they are in the test set).

  Raises:
    errors.UserInputError: if shapes, label range, minority classes or
      thresholds are inconsistent.
  """
  labels, logits, counts = _validated_inputs(
      labels, logits, train_class_counts, minority_classes,
      many_shot_threshold, few_shot_threshold)
  num_classes = counts.size
  predictions = np.argmax(logits, axis=1)

  confusion = sk_metrics.confusion_matrix(
      labels, predictions, labels=np.arange(num_classes))
  support = confusion.sum(axis=1)
  per_class = [
      float(confusion[c, c] / support[c]) if support[c] else None
      for c in range(num_classes)
  ]

  groups = {
      'many': np.flatnonzero(counts > many_shot_threshold),
      'medium': np.flatnonzero((counts >= few_shot_threshold) &
                               (counts <= many_shot_threshold)),
      'few': np.flatnonzero(counts < few_shot_threshold),
  }
  if minority_classes is None:
    minority_classes = default_minority_classes(counts)
  minority = sorted({int(c) for c in minority_classes})

  return {
      'accuracy': float(np.mean(predictions == labels)),
      'balanced_accuracy': _mean_or_none(per_class),
      'per_class_accuracy': per_class,
      'many_shot_accuracy': _mean_or_none(
          [per_class[c] for c in groups['many']]),
      'medium_shot_accuracy': _mean_or_none(
          [per_class[c] for c in groups['medium']]),
      'few_shot_accuracy': _mean_or_none([per_class[c] for c in groups['few']]),
      'minority_accuracy': _mean_or_none([per_class[c] for c in minority]),
      'macro_f1': float(sk_metrics.f1_score(
          labels, predictions, average='macro', zero_division=0)),
      'auc': _ovr_macro_auc(labels, logits),
      'num_examples': int(labels.size),
      'shot_counts': {name: int(idx.size) for name, idx in groups.items()},
  }


def _format_rate(value: Optional[float]) -> str:
  return 'n/a' if value is None else f'{value:.4f}'


def per_class_table(metrics: dict[str, Any],
                    train_class_counts: np.ndarray,
                    class_names: Optional[Sequence[str]] = None) -> str:
  """A fixed-width text table of per-class test accuracy.

  One row per class (class index, name, training count, test accuracy),
  sorted by training count descending so head and tail read top to bottom,
  then one summary line with overall, balanced, few-shot and minority
  accuracy and macro-F1.

  Args:
    metrics: the output of `classification_metrics`.
    train_class_counts: training examples per class [C], as passed to
      `classification_metrics`.
    class_names: optional display names, one per class.

  Returns:
    The table, lines joined by newlines, no trailing newline.

  Raises:
    errors.UserInputError: if the lengths of counts, names and metrics differ.
  """
  counts = np.asarray(train_class_counts)
  per_class = metrics['per_class_accuracy']
  if counts.ndim != 1 or counts.size != len(per_class):
    raise errors.UserInputError(
        f'train_class_counts has {counts.size} classes but the metrics have '
        f'{len(per_class)}; pass the counts the metrics were computed with.')
  if class_names is None:
    names = ['-'] * counts.size
  elif len(class_names) != counts.size:
    raise errors.UserInputError(
        f'class_names has {len(class_names)} names for {counts.size} classes; '
        f'pass one name per class or None.')
  else:
    names = [str(n) for n in class_names]

  name_width = max(4, *(len(n) for n in names))
  count_width = max(11, len(str(int(counts.max()))))
  header = (f'{"class":>5}  {"name":<{name_width}}  '
            f'{"train count":>{count_width}}  {"test acc":>8}')
  lines = [header, '-' * len(header)]
  for c in np.argsort(-counts, kind='stable'):
    lines.append(f'{int(c):>5}  {names[c]:<{name_width}}  '
                 f'{int(counts[c]):>{count_width}}  '
                 f'{_format_rate(per_class[c]):>8}')
  lines.append('-' * len(header))
  lines.append(
      f'overall {_format_rate(metrics["accuracy"])}  '
      f'balanced {_format_rate(metrics["balanced_accuracy"])}  '
      f'few-shot {_format_rate(metrics["few_shot_accuracy"])}  '
      f'minority {_format_rate(metrics["minority_accuracy"])}  '
      f'macro-F1 {_format_rate(metrics["macro_f1"])}')
  return '\n'.join(lines)


def predict_logits(model: tf.keras.Model, x: np.ndarray,
                   batch_size: int = 1024) -> np.ndarray:
  """The model's outputs on `x` in inference mode, batch by batch.

  Args:
    model: a Keras model returning logits.
    x: inputs [N, ...]; converted to float32.
    batch_size: examples per forward pass (bounds memory, not results).

  Returns:
    float32 array [N, C].

  Raises:
    errors.UserInputError: if `batch_size` is not positive.
  """
  if not isinstance(batch_size, numbers.Integral) or batch_size < 1:
    raise errors.UserInputError(
        f'batch_size must be a positive int (got {batch_size!r}).')
  x = np.asarray(x, dtype=np.float32)
  outputs = [
      # training=False: dropout off and batch-norm statistics frozen.
      model(x[start:start + batch_size], training=False).numpy()
      for start in range(0, len(x), batch_size)
  ]
  if not outputs:
    return np.zeros((0, model.output_shape[-1]), dtype=np.float32)
  return np.concatenate(outputs, axis=0).astype(np.float32, copy=False)
