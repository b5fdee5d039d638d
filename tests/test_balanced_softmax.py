"""Balanced Softmax: the loss, and the local prior counted on each client."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from tff_imbalance import compat
from tff_imbalance import errors
from tff_imbalance import losses
from tff_imbalance.learning import registry
from tff_imbalance.learning.algorithms import balanced_softmax
from tff_imbalance.learning.algorithms import fedavg_family
from tff_imbalance.models import spec as spec_lib

tff = compat.tff

NUM_CLASSES = 4
SPEC = spec_lib.ModelSpec('mlp', (6, 6, 1), NUM_CLASSES, seed=2)


def test_balanced_softmax_adds_the_log_prior_to_the_logits():
  logits = np.array([[1.0, 2.0, 0.0, -1.0], [0.5, 0.0, 0.0, 3.0]], np.float32)
  labels = np.array([0, 3], np.int64)
  counts = np.array([8.0, 2.0, 0.0, 1.0], np.float32)
  log_prior = losses.log_prior(counts)
  np.testing.assert_allclose(log_prior, np.log([8.0, 2.0, 1.0, 1.0]),
                             rtol=1e-6)
  adjusted = logits + np.log([8.0, 2.0, 1.0, 1.0])
  expected = [np.log(np.exp(row).sum()) - row[y]
              for row, y in zip(adjusted, labels)]
  np.testing.assert_allclose(
      losses.balanced_softmax(labels, logits, log_prior), expected, rtol=1e-5)
  # A uniform prior is plain cross-entropy.
  np.testing.assert_allclose(
      losses.balanced_softmax(labels, logits, tf.fill([NUM_CLASSES], 2.0)),
      losses.cross_entropy(labels, logits), rtol=1e-5)


def _one_client(local_epochs):
  """One client holding classes 0-2 at 12, 4 and 2 examples (no class 3)."""
  rng = np.random.default_rng(1)
  y = np.repeat(np.arange(3), [12, 4, 2]).astype(np.int64)
  x = (rng.random((len(y), 6, 6, 1)) + y[:, None, None, None]).astype(
      np.float32)
  dataset = tf.data.Dataset.from_tensor_slices(
      collections.OrderedDict(x=x, y=y)).repeat(local_epochs).batch(5)
  return dataset, np.bincount(y, minlength=NUM_CLASSES)


def test_local_prior_counts_one_pass_and_replaces_zeros():
  dataset, _ = _one_client(local_epochs=3)
  np.testing.assert_allclose(
      balanced_softmax.local_log_prior(dataset, NUM_CLASSES, 3),
      np.log([12.0, 4.0, 2.0, 1.0]), rtol=1e-6)


def _trained(process, dataset):
  state = process.next(process.initialize(), [dataset]).state
  return np.concatenate(
      [np.ravel(w) for w in process.get_model_weights(state).trainable])


def test_local_prior_is_the_clients_own_counts():
  """The local process equals the global one given this client's counts."""
  dataset, counts = _one_client(local_epochs=2)
  sgd = tff.learning.optimizers.build_sgdm(learning_rate=0.2)
  server = tff.learning.optimizers.build_sgdm(learning_rate=1.0)
  local = _trained(balanced_softmax.build_balanced_softmax(
      SPEC, sgd, server, prior='local', local_epochs=2), dataset)
  with_counts = _trained(balanced_softmax.build_balanced_softmax(
      SPEC, sgd, server, prior='global', train_class_counts=counts), dataset)
  plain = _trained(fedavg_family.build_local_training_process(
      SPEC, sgd, server), dataset)
  np.testing.assert_allclose(local, with_counts, atol=1e-6)
  assert np.abs(local - plain).max() > 1e-3


def test_registry_builds_both_priors_and_refuses_others():
  context = registry.TaskContext(num_classes=NUM_CLASSES, num_clients=2,
                                 train_class_counts=np.array([9, 3, 1, 0]))
  for prior in ('local', 'global'):
    process = registry.build_process(
        'balanced_softmax', SPEC, registry.AlgorithmConfig(), context,
        balanced_softmax.BalancedSoftmaxOptions(prior=prior))
    broadcast = np.asarray(process.initialize().client_work['broadcast'])
    expected = (np.log([9.0, 3.0, 1.0, 1.0]) if prior == 'global' else
                np.zeros(NUM_CLASSES))
    np.testing.assert_allclose(broadcast, expected, rtol=1e-6)
  with pytest.raises(errors.UserInputError, match='--balanced_softmax_prior'):
    balanced_softmax.BalancedSoftmaxOptions(prior='uniform')
