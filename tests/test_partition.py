"""Tests for tff_imbalance.data.partition: exact sizes, coverage, seeding."""

import math

import numpy as np
import pytest

from tff_imbalance import errors
from tff_imbalance.data import partition
from tff_imbalance.data import stats

# A long tail over 10 classes (500 * 100^(-c/9)), N = 1236.
_LT_COUNTS = [500, 299, 179, 107, 64, 38, 23, 13, 8, 5]


def _labels(counts, seed=7):
  labels = np.repeat(np.arange(len(counts)), counts)
  return np.random.default_rng(seed).permutation(labels)


def _assert_exact_cover(parts, num_examples):
  for part in parts:
    assert part.dtype == np.int64
    np.testing.assert_array_equal(part, np.sort(part))
  np.testing.assert_array_equal(np.sort(np.concatenate(parts)),
                                np.arange(num_examples))


def _assert_same(parts_a, parts_b):
  assert len(parts_a) == len(parts_b)
  for a, b in zip(parts_a, parts_b):
    np.testing.assert_array_equal(a, b)


def _differs(parts_a, parts_b):
  return any(not np.array_equal(a, b) for a, b in zip(parts_a, parts_b))


# --- iid ---------------------------------------------------------------------


def test_iid_partition_sizes_and_cover():
  parts = partition.iid_partition(103, 10, seed=0)
  assert [len(p) for p in parts] == [11, 11, 11] + [10] * 7
  _assert_exact_cover(parts, 103)


def test_iid_partition_is_seeded():
  _assert_same(partition.iid_partition(500, 7, seed=3),
               partition.iid_partition(500, 7, seed=3))
  assert _differs(partition.iid_partition(500, 7, seed=3),
                  partition.iid_partition(500, 7, seed=4))


# --- Dirichlet ---------------------------------------------------------------


@pytest.mark.parametrize('alpha', [1e-3, 0.1, 1.0, 100.0])
def test_dirichlet_partition_equal_sizes_and_cover(alpha):
  labels = _labels(_LT_COUNTS)
  parts = partition.dirichlet_partition(labels, 10, alpha, seed=1)
  # floor(1236 / 10) = 123 for clients 0..8; the last takes 1236 - 9*123.
  assert [len(p) for p in parts] == [123] * 9 + [129]
  _assert_exact_cover(parts, labels.size)


def test_dirichlet_partition_larger_scale():
  labels = _labels([2000, 1500, 900, 400, 100, 30], seed=2)
  parts = partition.dirichlet_partition(labels, 97, 0.3, seed=5)
  # 4930 // 97 = 50, and 4930 - 96 * 50 = 130.
  assert [len(p) for p in parts] == [50] * 96 + [130]
  _assert_exact_cover(parts, labels.size)


def test_dirichlet_partition_is_seeded():
  labels = _labels(_LT_COUNTS)
  _assert_same(partition.dirichlet_partition(labels, 10, 0.5, seed=9),
               partition.dirichlet_partition(labels, 10, 0.5, seed=9))
  assert _differs(partition.dirichlet_partition(labels, 10, 0.5, seed=9),
                  partition.dirichlet_partition(labels, 10, 0.5, seed=10))


def test_dirichlet_partition_alpha_controls_skew():
  labels = _labels(_LT_COUNTS)
  iid_like = stats.client_class_counts(
      labels, partition.dirichlet_partition(labels, 10, 1e4, seed=0), 10)
  skewed = stats.client_class_counts(
      labels, partition.dirichlet_partition(labels, 10, 0.05, seed=0), 10)
  assert stats.composition_mismatch(iid_like).min() > 0.99
  assert stats.composition_mismatch(skewed).mean() < 0.9


def test_dirichlet_partition_absent_class_gets_nothing():
  # Class 2 of num_classes=4 has no examples: Dir is drawn over 0, 1, 3.
  labels = _labels([40, 30, 0, 20])
  parts = partition.dirichlet_partition(labels, 3, 1.0, seed=0, num_classes=4)
  assert [len(p) for p in parts] == [30, 30, 30]
  _assert_exact_cover(parts, labels.size)
  assert stats.client_class_counts(labels, parts, 4)[:, 2].sum() == 0


def test_dirichlet_partition_single_client():
  labels = _labels([5, 6])
  parts = partition.dirichlet_partition(labels, 1, 1.0, seed=0)
  _assert_exact_cover(parts, 11)


# --- tau-sampling ------------------------------------------------------------


def test_tau_sampling_capacities_and_cover():
  labels = _labels(_LT_COUNTS)
  parts = partition.tau_sampling_partition(labels, 10, 2, seed=0)
  # 1236 = 10 * 123 + 6: the first six clients hold one more.
  assert [len(p) for p in parts] == [124] * 6 + [123] * 4
  _assert_exact_cover(parts, labels.size)


@pytest.mark.parametrize('tau', [0.4, 1, 2])
def test_tau_sampling_rarest_class_on_few_clients(tau):
  labels = _labels(_LT_COUNTS)
  parts = partition.tau_sampling_partition(labels, 10, tau, seed=3)
  counts = stats.client_class_counts(labels, parts, 10)
  # n_min = 5 -> n_tau = 2, 5, 10; the rarest class lies on ceil(5 / n_tau)
  # clients: 3, 1, 1 (003: with tau = 1 it "will only exist on one node").
  n_tau = max(1, round(tau * 5))
  assert np.count_nonzero(counts[:, 9]) == math.ceil(5 / n_tau)
  # The walk starts with client 0, so it holds the start of the rarest class.
  assert counts[0, 9] == min(5, n_tau)


def test_tau_sampling_hand_worked_walk():
  # Counts [6, 3, 1], K = 2 (capacity 5 each), n_min = 1, tau = 2 -> n_tau = 2.
  # Sequence by rarity: 2 | 1 1 1 | 0 0 0 0 0 0.
  # Pass 1 (order 0, 1): client 0 <- [2, 1], client 1 <- [1, 1].
  # Passes 2-3 give the six class-0 examples 3 + 3 whatever the order.
  labels = np.array([0, 1, 0, 0, 2, 0, 1, 0, 1, 0])
  for seed in range(5):
    parts = partition.tau_sampling_partition(labels, 2, 2, seed=seed)
    np.testing.assert_array_equal(
        stats.client_class_counts(labels, parts, 3), [[3, 1, 1], [3, 2, 0]])


def test_tau_sampling_is_seeded():
  labels = _labels(_LT_COUNTS)
  _assert_same(partition.tau_sampling_partition(labels, 10, 1, seed=2),
               partition.tau_sampling_partition(labels, 10, 1, seed=2))
  assert _differs(partition.tau_sampling_partition(labels, 10, 1, seed=2),
                  partition.tau_sampling_partition(labels, 10, 1, seed=3))


def test_tau_sampling_many_clients():
  labels = _labels([3000, 1200, 500, 200, 60], seed=1)
  parts = partition.tau_sampling_partition(labels, 300, 0.5, seed=1)
  # 4960 = 300 * 16 + 160.
  assert [len(p) for p in parts] == [17] * 160 + [16] * 140
  _assert_exact_cover(parts, labels.size)


# --- writers -----------------------------------------------------------------


def test_writer_partition():
  ids, parts = partition.writer_partition(
      np.array(['b', 'a', 'b', 'c', 'a', 'b']))
  assert ids == ['a', 'b', 'c']
  _assert_same(parts, [np.array([1, 4]), np.array([0, 2, 5]), np.array([3])])
  assert all(p.dtype == np.int64 for p in parts)


def test_writer_partition_numeric_ids_become_str():
  ids, parts = partition.writer_partition(np.array([7, 3, 7]))
  assert ids == ['3', '7']
  _assert_same(parts, [np.array([1]), np.array([0, 2])])


# --- train / validation ------------------------------------------------------


def test_train_validation_split_stratified():
  labels = np.repeat([0, 1, 2, 3], [10, 5, 1, 4])
  client = np.arange(20)
  train, val = partition.train_validation_split(client, labels, 0.2, seed=0)
  # round(2.0), round(1.0), round(0.2), round(0.8) = 2, 1, 0, 1.
  np.testing.assert_array_equal(np.bincount(labels[val], minlength=4),
                                [2, 1, 0, 1])
  np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), client)
  assert train.dtype == val.dtype == np.int64

  _, val = partition.train_validation_split(client, labels, 0.5, seed=0)
  # 5, 2.5 -> 3 (half up), 0.5 -> 1, 2.
  np.testing.assert_array_equal(np.bincount(labels[val], minlength=4),
                                [5, 3, 1, 2])


def test_train_validation_split_zero_fraction():
  labels = np.array([0, 1, 1, 0])
  train, val = partition.train_validation_split(
      np.array([3, 1, 2]), labels, 0.0, seed=0)
  np.testing.assert_array_equal(train, [1, 2, 3])
  assert val.size == 0 and val.dtype == np.int64


def test_train_validation_split_keeps_a_training_example():
  labels = np.array([0, 1, 2])
  train, val = partition.train_validation_split(
      np.array([1]), labels, 0.6, seed=0)
  np.testing.assert_array_equal(train, [1])
  assert val.size == 0
  # Both classes round 0.5 up to 1; class 0 (lowest id) gives one back.
  train, val = partition.train_validation_split(
      np.array([0, 1]), labels, 0.5, seed=0)
  np.testing.assert_array_equal(train, [0])
  np.testing.assert_array_equal(val, [1])


def test_train_validation_split_is_seeded():
  labels = _labels([50, 50])
  client = np.arange(0, 100, 2)
  a = partition.train_validation_split(client, labels, 0.3, seed=1)
  b = partition.train_validation_split(client, labels, 0.3, seed=1)
  c = partition.train_validation_split(client, labels, 0.3, seed=2)
  _assert_same(a, b)
  assert _differs(a, c)


# --- bad input ---------------------------------------------------------------


def test_dirichlet_per_class_covers_every_example_with_unequal_clients():
  labels = _labels(_LT_COUNTS)
  parts = partition.dirichlet_per_class_partition(labels, 10, 1.0, seed=3,
                                                  num_classes=10)
  again = partition.dirichlet_per_class_partition(labels, 10, 1.0, seed=3,
                                                  num_classes=10)
  other = partition.dirichlet_per_class_partition(labels, 10, 1.0, seed=4,
                                                  num_classes=10)

  _assert_exact_cover(parts, labels.size)
  _assert_same(parts, again)
  assert any(not np.array_equal(a, b) for a, b in zip(parts, other))
  sizes = [part.size for part in parts]
  assert len(set(sizes)) > 1  # Unlike dirichlet_partition's equal clients.
  assert min(sizes) >= 10  # NIID-Bench's minimum client size.


def test_dirichlet_per_class_splits_each_class_by_its_own_proportions():
  labels = _labels([400, 400, 40])
  # alpha -> infinity: q = 1_K / K for every class, so each class, the tail
  # one too, is cut into K near-equal pieces (floor(cumsum(q) * N_c) cuts,
  # so a piece may be one off).
  even = stats.client_class_counts(
      labels, partition.dirichlet_per_class_partition(labels, 4, 1e9, 0), 3)
  np.testing.assert_allclose(even, [[100, 100, 10]] * 4, atol=1)
  # Small alpha: q is nearly one-hot, so each class sits mostly on one
  # client, and a client that reached N/K takes no further class.
  labels = _labels([1000, 1000])
  skewed = stats.client_class_counts(
      labels, partition.dirichlet_per_class_partition(labels, 2, 0.05, 1), 2)
  assert (skewed.max(axis=1) >= 0.9 * skewed.sum(axis=1)).all()
  assert sorted(np.argmax(skewed, axis=1).tolist()) == [0, 1]


def test_dirichlet_per_class_refuses_an_impossible_minimum():
  # 20 examples of one class over 20 clients at tiny alpha: a draw hands the
  # whole class to one client, never one example to each.
  with pytest.raises(errors.UserInputError,
                     match='--partition=dirichlet_per_class found no split.*'
                     'raise --dirichlet_alpha or lower --num_clients'):
    partition.dirichlet_per_class_partition(np.zeros(20, np.int64), 20, 1e-4,
                                            0)


def test_composition_summary_counts_the_split():
  labels = np.array([0, 0, 1, 2, 2, 2])
  summary = partition.composition_summary(
      labels, [np.array([0, 2]), np.array([1, 3, 4, 5])], 3)
  assert summary == {
      'profiled_examples': 6,
      'profiled_class_counts': [2, 1, 3],
      'client_class_counts': [[1, 1, 0], [1, 0, 3]],
      # cos([1,1,0], [2,1,3]) = 3/(sqrt(2) sqrt(14)), cos([1,0,3], ..) =
      # 11/(sqrt(10) sqrt(14)).
      'local_global_cosine_mean': pytest.approx(
          (3 / np.sqrt(28) + 11 / np.sqrt(140)) / 2),
  }


@pytest.mark.parametrize('call,pattern', [
    (lambda: partition.iid_partition(10, 0, 0), '--num_clients'),
    (lambda: partition.iid_partition(5, 6, 0),
     r'more clients than examples: --num_clients=6 .* only 5 examples'),
    (lambda: partition.dirichlet_partition(np.arange(4) % 2, 5, 1.0, 0),
     '--num_clients=5'),
    (lambda: partition.dirichlet_partition(np.arange(4) % 2, 2, 0.0, 0),
     '--dirichlet_alpha'),
    (lambda: partition.dirichlet_partition(np.arange(4) % 2, 2, -1.0, 0),
     '--dirichlet_alpha'),
    (lambda: partition.dirichlet_partition(np.array([0, -1]), 1, 1.0, 0),
     'label -1'),
    (lambda: partition.dirichlet_partition(np.array([0, 3]), 1, 1.0, 0, 3),
     r'label 3 .* \[0, 3\)'),
    (lambda: partition.dirichlet_partition(np.array([0.5, 1.0]), 1, 1.0, 0),
     'labels must be integers'),
    (lambda: partition.dirichlet_per_class_partition(np.arange(4) % 2, 2, 0.0,
                                                     0), '--dirichlet_alpha'),
    (lambda: partition.dirichlet_per_class_partition(np.arange(4) % 2, 5, 1.0,
                                                     0), '--num_clients=5'),
    (lambda: partition.tau_sampling_partition(np.arange(4) % 2, 2, 0, 0),
     '--tau'),
    (lambda: partition.tau_sampling_partition(np.arange(4) % 2, 9, 1, 0),
     '--num_clients'),
    (lambda: partition.writer_partition(np.array([])), 'writer_ids'),
    (lambda: partition.train_validation_split(
        np.arange(3), np.zeros(3, int), 1.0, 0), '--validation_fraction'),
    (lambda: partition.train_validation_split(
        np.arange(3), np.zeros(3, int), -0.1, 0), '--validation_fraction'),
    (lambda: partition.train_validation_split(
        np.array([5]), np.zeros(3, int), 0.1, 0), 'client index 5'),
])
def test_bad_input_names_the_parameter(call, pattern):
  with pytest.raises(errors.UserInputError, match=pattern):
    call()


def test_dirichlet_per_class_keeps_drawing_for_clients_full_of_head_class():
  """No cap: a client that the head class filled past N / K still gets its
  Dir(alpha) share of every later class (NIID-Bench's cap would give it
  none, leaving head-heavy clients with 2-4 classes on a long tail)."""
  labels = np.repeat(np.arange(5), [1000, 100, 100, 100, 100])
  mean_size = labels.size / 4
  full_clients_with_tail = 0
  for seed in range(5):
    parts = partition.dirichlet_per_class_partition(labels, 4, 1.0, seed=seed,
                                                    num_classes=5)
    for part in parts:
      counts = np.bincount(labels[part], minlength=5)
      if counts[0] >= mean_size and counts[1:].sum() > 0:
        full_clients_with_tail += 1
  assert full_clients_with_tail >= 3


def test_classes_per_client_gives_k_classes_in_about_equal_counts():
  # 4 classes of 300 and one of 15 (Gamma 20:1) over 30 clients, 2 each.
  labels = np.repeat(np.arange(5), [300, 300, 300, 300, 15])
  parts = partition.classes_per_client_partition(labels, 30, 2, seed=0)
  assert np.array_equal(np.sort(np.concatenate(parts)),
                        np.arange(labels.size))
  counts = np.array([np.bincount(labels[p], minlength=5) for p in parts])
  assert ((counts > 0).sum(axis=1) == 2).all()
  # Holders in proportion to size: 60 slots, the rare class 1 holder
  # (apportioned 0, raised to 1), the others 14-15 holders of ~20 each.
  holders = (counts > 0).sum(axis=0)
  assert holders[4] == 1 and holders.sum() == 60
  held = counts[counts > 0]
  assert held.min() >= 15 and held.max() <= 22
  # Locally balanced, globally imbalanced: the clients mirror the whole far
  # less than an iid split does.
  assert partition.local_global_cosine(counts) < 0.8
  iid = partition.iid_partition(labels.size, 30, 0)
  assert partition.local_global_cosine(np.array(
      [np.bincount(labels[p], minlength=5) for p in iid])) > 0.95
  again = partition.classes_per_client_partition(labels, 30, 2, seed=0)
  assert all(np.array_equal(a, b) for a, b in zip(parts, again))
  other = partition.classes_per_client_partition(labels, 30, 2, seed=1)
  assert not all(np.array_equal(a, b) for a, b in zip(parts, other))


def test_classes_per_client_caps_a_class_at_every_client():
  # k = C: every client holds every class, whatever the class sizes.
  labels = np.repeat(np.arange(3), [90, 30, 6])
  parts = partition.classes_per_client_partition(labels, 5, 3, seed=0)
  counts = np.array([np.bincount(labels[p], minlength=3) for p in parts])
  assert (counts > 0).all()
  np.testing.assert_array_equal(counts.sum(axis=0), [90, 30, 6])


@pytest.mark.parametrize('clients,k,pattern', [
    (10, 0, r'--classes_per_client must be in \[1, 5\]'),
    (10, 6, r'--classes_per_client must be in \[1, 5\]'),
    (2, 2, r'--num_clients=2 clients of 2 classes hold 4 classes, fewer '
     r'than the 5'),
])
def test_classes_per_client_bad_values_are_named(clients, k, pattern):
  labels = np.repeat(np.arange(5), 20)
  with pytest.raises(errors.UserInputError, match=pattern):
    partition.classes_per_client_partition(labels, clients, k, seed=0)
