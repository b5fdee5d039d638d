"""Tests for tff_imbalance.data.stats on a hand-worked two-client split.

Client 1 holds class counts v_1 = [3, 1, 0], client 2 holds v_2 = [1, 1, 2],
so V = [4, 2, 2] and, by hand (002 sec 3.2):
  Gamma   = 4 / 2 = 2
  gamma_1 = inf (class 2 missing), gamma_2 = 2 / 1 = 2
  CS_1    = (12 + 2 + 0) / (sqrt(10) sqrt(24)) = 14 / sqrt(240) = 3.5 / sqrt(15)
  CS_2    = (4 + 2 + 4) / (sqrt(6) sqrt(24)) = 10 / 12
"""

import json
import math

import numpy as np
import pytest

from tff_imbalance import errors
from tff_imbalance.data import stats

_LABELS = np.array([0, 2, 0, 1, 0, 1, 2, 0, 0])  # index 8 is on no client.
_PARTITION = [np.array([0, 2, 3, 4]), np.array([1, 5, 6, 7])]


def test_class_counts():
  np.testing.assert_array_equal(stats.class_counts(_LABELS[:8], 4),
                                [4, 2, 2, 0])
  assert stats.class_counts(_LABELS, 3).dtype == np.int64


@pytest.mark.parametrize('labels,pattern', [
    (np.array([0, 1, 3]), r'label 3 .*\[0, 3\)'),
    (np.array([0, -1]), r'label -1 .*\[0, 3\)'),
    (np.array([[0, 1]]), 'labels must be a 1-D'),
    (np.array([0.0, 1.0]), 'labels must be integers'),
])
def test_class_counts_bad_labels(labels, pattern):
  with pytest.raises(errors.UserInputError, match=pattern):
    stats.class_counts(labels, 3)


def test_client_class_counts():
  counts = stats.client_class_counts(_LABELS, _PARTITION, 3)
  np.testing.assert_array_equal(counts, [[3, 1, 0], [1, 1, 2]])
  assert counts.dtype == np.int64


def test_client_class_counts_index_out_of_range():
  with pytest.raises(errors.UserInputError, match='client 1 holds index 9'):
    stats.client_class_counts(_LABELS, [np.array([0]), np.array([9])], 3)


def test_global_imbalance():
  assert stats.global_imbalance(np.array([4, 2, 2])) == 2.0
  assert stats.global_imbalance(np.array([4, 0, 2])) == math.inf


def test_local_imbalance():
  np.testing.assert_array_equal(
      stats.local_imbalance(np.array([[3, 1, 0], [1, 1, 2], [0, 0, 0]])),
      [math.inf, 2.0, math.inf])


def test_composition_mismatch():
  similarity = stats.composition_mismatch(np.array([[3, 1, 0], [1, 1, 2]]))
  np.testing.assert_allclose(similarity, [3.5 / math.sqrt(15), 10 / 12])
  # A client identical in shape to the whole is a perfect match.
  np.testing.assert_allclose(
      stats.composition_mismatch(np.array([[2, 1], [4, 2]])), [1.0, 1.0])
  assert np.isnan(stats.composition_mismatch(np.array([[0, 0], [1, 2]]))[0])


def test_composition():
  np.testing.assert_allclose(stats.composition(np.array([4, 2, 2])),
                             [0.5, 0.25, 0.25])
  np.testing.assert_allclose(
      stats.composition(np.array([[3, 1, 0], [0, 0, 0]])),
      [[0.75, 0.25, 0.0], [0.0, 0.0, 0.0]])


def test_summarize():
  summary = stats.summarize(_LABELS, _PARTITION, 3)
  json.dumps(summary, allow_nan=False)  # Strict JSON: no Infinity or NaN.
  cs_mean = (3.5 / math.sqrt(15) + 10 / 12) / 2
  assert summary == {
      'num_clients': 2,
      'num_classes': 3,
      'num_examples': 8,
      'global_counts': [4, 2, 2],
      'global_imbalance': 2.0,
      'num_missing_classes': 0,
      'client_size_mean': 4.0,
      'client_size_min': 4,
      'client_size_max': 4,
      'mean_composition_similarity': pytest.approx(cs_mean),
      'fraction_clients_missing_class': 0.5,
  }


def test_summarize_missing_global_class():
  summary = stats.summarize(_LABELS, _PARTITION, 4)
  json.dumps(summary, allow_nan=False)
  assert summary['global_imbalance'] is None
  assert summary['num_missing_classes'] == 1
  assert summary['fraction_clients_missing_class'] == 1.0


@pytest.mark.parametrize('call', [
    lambda: stats.global_imbalance(np.array([[1, 2]])),
    lambda: stats.local_imbalance(np.array([1, 2])),
    lambda: stats.composition_mismatch(np.array([1, 2])),
])
def test_bad_shapes(call):
  with pytest.raises(errors.UserInputError, match='shape'):
    call()
