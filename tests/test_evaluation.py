"""Tests for tff_imbalance.evaluation, against hand-computed values."""

import json
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top
from sklearn import metrics as sk_metrics  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from tff_imbalance import errors  # pylint: disable=g-import-not-at-top
from tff_imbalance import evaluation  # pylint: disable=g-import-not-at-top

# Tiny case: 3 classes, 6 test examples. Training counts put class 0 in
# many-shot (150 > 100), class 1 in medium-shot (20 <= 50 <= 100) and class 2
# in few-shot (10 < 20).
COUNTS = np.array([150, 50, 10])
LABELS = np.array([0, 0, 1, 1, 2, 2])
PREDICTIONS = np.array([0, 0, 1, 0, 2, 1])


def _one_hot_logits(predictions: np.ndarray, num_classes: int) -> np.ndarray:
  return 5.0 * np.eye(num_classes)[predictions]


def _tiny_metrics(**kwargs) -> dict:
  return evaluation.classification_metrics(
      LABELS, _one_hot_logits(PREDICTIONS, 3), COUNTS, **kwargs)


def test_accuracies_by_hand():
  m = _tiny_metrics(minority_classes=[1, 2])
  assert m['accuracy'] == pytest.approx(4 / 6)
  # Recalls: class 0 2/2, class 1 1/2, class 2 1/2.
  assert m['per_class_accuracy'] == pytest.approx([1.0, 0.5, 0.5])
  assert m['balanced_accuracy'] == pytest.approx(2 / 3)
  assert m['many_shot_accuracy'] == pytest.approx(1.0)
  assert m['medium_shot_accuracy'] == pytest.approx(0.5)
  assert m['few_shot_accuracy'] == pytest.approx(0.5)
  assert m['minority_accuracy'] == pytest.approx(0.5)
  assert m['shot_counts'] == {'many': 1, 'medium': 1, 'few': 1}
  assert m['num_examples'] == 6


def test_macro_f1_by_hand():
  # Class 0: TP 2, FP 1, FN 0 -> P 2/3, R 1, F1 0.8.
  # Class 1: TP 1, FP 1, FN 1 -> P 1/2, R 1/2, F1 0.5.
  # Class 2: TP 1, FP 0, FN 1 -> P 1, R 1/2, F1 2/3.
  expected = (0.8 + 0.5 + 2 / 3) / 3
  assert _tiny_metrics()['macro_f1'] == pytest.approx(expected)


def test_auc_by_hand():
  # Logits are log-probabilities, so softmax returns these rows. Scores are
  # distinct within each column: float rounding cannot turn a tie into a win.
  probs = np.array([[0.70, 0.20, 0.10],
                    [0.40, 0.45, 0.15],
                    [0.50, 0.30, 0.20],
                    [0.15, 0.60, 0.25],
                    [0.25, 0.35, 0.40],
                    [0.10, 0.55, 0.35]])
  # Pairs won by a positive over a negative, out of 2 x 4:
  #   class 0: 0.70 beats all 4; 0.40 beats 0.15, 0.25, 0.10 -> 7 / 8.
  #   class 1: 0.60 beats all 4; 0.30 beats 0.20 only -> 5 / 8.
  #   class 2: 0.40 and 0.35 beat 0.10, 0.15, 0.20, 0.25 -> 8 / 8.
  m = evaluation.classification_metrics(LABELS, np.log(probs), COUNTS)
  assert m['auc'] == pytest.approx((7 / 8 + 5 / 8 + 8 / 8) / 3)


def test_auc_perfect_ranking_is_one():
  logits = np.array([[3., 1., 0.], [2., 0., 1.], [0., 2., 1.],
                     [0., 4., 1.], [1., 0., 2.], [0., 1., 3.]])
  m = evaluation.classification_metrics(LABELS, logits, COUNTS)
  assert m['auc'] == pytest.approx(1.0)
  assert m['accuracy'] == pytest.approx(1.0)


def test_auc_matches_sklearn_when_all_classes_present():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 4, size=40)
  logits = rng.normal(size=(40, 4))
  m = evaluation.classification_metrics(labels, logits, np.array([9, 8, 7, 6]))
  probs = tf.nn.softmax(logits).numpy()
  assert m['auc'] == pytest.approx(
      sk_metrics.roc_auc_score(labels, probs, multi_class='ovr'))


def test_default_minority_is_bottom_30_percent_by_count():
  counts = np.array([500, 400, 300, 200, 100, 5, 80, 60, 40, 20])
  # Sorted descending the last int(0.3 * 10) = 3 classes are 9, 8 and 5.
  assert evaluation.default_minority_classes(counts) == [5, 8, 9]
  assert evaluation.default_minority_classes(np.full(10, 7)) == [7, 8, 9]
  labels = np.arange(10).repeat(2)
  predictions = labels.copy()
  predictions[[10, 16, 18, 19]] = 0  # Wrong once on 5 and 8, twice on 9.
  m = evaluation.classification_metrics(
      labels, _one_hot_logits(predictions, 10), counts)
  assert m['minority_accuracy'] == pytest.approx((0.5 + 0.5 + 0.0) / 3)


def test_no_default_minority_with_three_classes():
  assert _tiny_metrics()['minority_accuracy'] is None


def test_absent_test_class_is_none_and_excluded():
  counts = np.array([300, 60, 30, 5])
  labels = np.array([0, 0, 1, 2])
  predictions = np.array([0, 3, 1, 1])  # Class 3 is predicted, never true.
  m = evaluation.classification_metrics(
      labels, _one_hot_logits(predictions, 4), counts, minority_classes=[3])
  assert m['per_class_accuracy'] == [0.5, 1.0, 0.0, None]
  assert m['balanced_accuracy'] == pytest.approx(0.5)
  assert m['few_shot_accuracy'] is None  # Class 3 is the only few-shot class.
  assert m['shot_counts'] == {'many': 1, 'medium': 2, 'few': 1}
  assert m['minority_accuracy'] is None
  # F1 over classes 0..3 (3 appears in predictions): 2/3, 2/3, 0, 0.
  assert m['macro_f1'] == pytest.approx((2 / 3 + 2 / 3) / 4)
  assert m['auc'] is not None


def test_empty_shot_groups_are_none_and_json_dumps():
  m = evaluation.classification_metrics(
      LABELS, _one_hot_logits(PREDICTIONS, 3), np.array([500, 500, 500]))
  assert m['medium_shot_accuracy'] is None
  assert m['few_shot_accuracy'] is None
  assert m['shot_counts'] == {'many': 3, 'medium': 0, 'few': 0}
  expected_keys = {
      'accuracy', 'balanced_accuracy', 'per_class_accuracy',
      'many_shot_accuracy', 'medium_shot_accuracy', 'few_shot_accuracy',
      'minority_accuracy', 'macro_f1', 'auc', 'num_examples', 'shot_counts'}
  assert set(m) == expected_keys
  text = json.dumps(m, allow_nan=False)
  assert json.loads(text) == m


def test_single_test_class_has_no_auc():
  m = evaluation.classification_metrics(
      np.array([1, 1]), np.array([[0., 1., 0.], [1., 0., 0.]]), COUNTS)
  assert m['auc'] is None
  assert m['balanced_accuracy'] == pytest.approx(0.5)
  json.dumps(m, allow_nan=False)


@pytest.mark.parametrize('labels, logits, match', [
    (LABELS, np.zeros((6, 4)), 'logits must have shape'),
    (LABELS, np.zeros((5, 3)), 'logits must have shape'),
    (np.array([0, 1, 3]), np.zeros((3, 3)), r'labels must lie in \[0, 3\)'),
    (np.array([-1, 0]), np.zeros((2, 3)), 'labels must lie'),
    (np.array([0., 1.]), np.zeros((2, 3)), 'integer dtype'),
    (np.zeros((2, 1), np.int64), np.zeros((2, 3)), '1-D'),
])
def test_shape_and_range_errors(labels, logits, match):
  with pytest.raises(errors.UserInputError, match=match):
    evaluation.classification_metrics(labels, logits, COUNTS)


def test_bad_minority_and_thresholds():
  with pytest.raises(errors.UserInputError, match='minority_classes'):
    _tiny_metrics(minority_classes=[3])
  with pytest.raises(errors.UserInputError, match='few_shot_threshold'):
    _tiny_metrics(many_shot_threshold=10, few_shot_threshold=20)


def test_per_class_table_sorted_by_count():
  counts = np.array([10, 150, 50])
  labels = np.array([0, 1, 1, 2])
  predictions = np.array([0, 1, 0, 0])
  m = evaluation.classification_metrics(
      labels, _one_hot_logits(predictions, 3), counts, minority_classes=[0])
  table = evaluation.per_class_table(m, counts, class_names=['cat', 'dog', 'x'])
  lines = table.splitlines()
  rows = lines[2:5]
  assert [row.split()[0] for row in rows] == ['1', '2', '0']
  assert rows[0].split() == ['1', 'dog', '150', '0.5000']
  assert rows[1].split() == ['2', 'x', '50', '0.0000']
  assert rows[2].split() == ['0', 'cat', '10', '1.0000']
  assert len({len(line) for line in lines[:5]}) == 1  # Fixed width.
  assert lines[-1] == ('overall 0.5000  balanced 0.5000  few-shot 1.0000  '
                       'minority 1.0000  macro-F1 0.3889')


def test_per_class_table_shows_absent_class_and_checks_lengths():
  m = evaluation.classification_metrics(
      np.array([0, 1]), _one_hot_logits(np.array([0, 1]), 3), COUNTS)
  table = evaluation.per_class_table(m, COUNTS)
  assert table.splitlines()[4].split() == ['2', '-', '10', 'n/a']
  with pytest.raises(errors.UserInputError, match='class_names'):
    evaluation.per_class_table(m, COUNTS, class_names=['a'])
  with pytest.raises(errors.UserInputError, match='train_class_counts'):
    evaluation.per_class_table(m, np.array([1, 2]))


def test_predict_logits_batches_match_single_call():
  inputs = tf.keras.Input(shape=(4,))
  outputs = tf.keras.layers.Dense(
      3, kernel_initializer=tf.keras.initializers.GlorotNormal(seed=0))(inputs)
  model = tf.keras.Model(inputs, outputs)
  x = np.random.default_rng(0).random((10, 4))
  logits = evaluation.predict_logits(model, x, batch_size=3)
  assert logits.shape == (10, 3) and logits.dtype == np.float32
  np.testing.assert_allclose(
      logits, model(x.astype(np.float32)).numpy(), atol=1e-6)
  assert evaluation.predict_logits(model, x[:0]).shape == (0, 3)
  with pytest.raises(errors.UserInputError, match='batch_size'):
    evaluation.predict_logits(model, x, batch_size=0)
