"""Centralized and local training: the reference rows of 003's tables."""

import json
import os

import numpy as np
import tensorflow as tf

from tff_imbalance import compat
from tff_imbalance import report
from tff_imbalance import runner
from tff_imbalance.data import arrays
from tff_imbalance.data import federated
from tff_imbalance.learning import registry
from tff_imbalance.learning.algorithms import centralized
from tff_imbalance.models import spec as spec_lib

tff = compat.tff

NUM_CLASSES = 4
SPEC = spec_lib.ModelSpec('mlp', (6, 6, 1), NUM_CLASSES, seed=4)


def _examples(labels, seed):
  rng = np.random.default_rng(seed)
  y = np.asarray(labels, np.int64)
  x = (rng.random((len(y), 6, 6, 1)) * 0.3 + y[:, None, None, None] / 4
      ).astype(np.float32)
  return arrays.LabeledArrays(x=x, y=y)


def _data():
  """Client 0 holds class 0 only; clients 1 and 2 hold every class."""
  labels = np.concatenate([np.zeros(20), np.tile(np.arange(4), 10)])
  pool = _examples(labels, seed=0)
  parts = [np.arange(20), np.arange(20, 40), np.arange(40, 60)]
  return federated.build_federated_data(pool, parts, NUM_CLASSES,
                                        validation_fraction=0.2, seed=0)


def test_pooled_and_single_client_views():
  data = _data()
  pooled = data.pooled()
  assert pooled.num_clients == 1
  np.testing.assert_array_equal(pooled.train_indices[0],
                                np.concatenate(data.train_indices))
  np.testing.assert_array_equal(pooled.validation_indices[0],
                                np.concatenate(data.validation_indices))
  np.testing.assert_array_equal(pooled.train_labels(), data.train_labels())
  alone = data.only_client(2)
  assert alone.client_ids == ('2',)
  np.testing.assert_array_equal(alone.train_indices[0], data.train_indices[2])


def test_centralized_round_is_plain_sgd_on_the_pool():
  data = _data().pooled()
  lr = 0.3
  process = centralized.build_centralized(
      SPEC, tff.learning.optimizers.build_sgdm(learning_rate=lr))
  state = process.initialize()
  initial = process.get_model_weights(state)
  [dataset] = data.round_inputs([0], round_num=1, local_epochs=2,
                                batch_size=8, seed=0, with_validation=False)
  trained = process.get_model_weights(process.next(state, [dataset]).state)

  # The same epochs as a plain TF loop of mini-batch SGD, batch by batch.
  model = SPEC.build_keras()
  initial.assign_weights_to(model)
  for batch in dataset:
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
          batch['y'], model(batch['x'], training=True)))
    for variable, gradient in zip(
        model.trainable_variables,
        tape.gradient(loss, model.trainable_variables)):
      variable.assign_sub(lr * gradient)
  for ours, plain in zip(trained.trainable, model.trainable_variables):
    np.testing.assert_allclose(ours, plain.numpy(), atol=1e-5)


def test_local_training_trains_each_client_alone(tmp_path):
  data = _data()
  test = _examples(np.repeat(np.arange(4), 5), seed=9)
  train_counts = np.bincount(data.train_labels(), minlength=NUM_CLASSES)
  process = registry.build_process(
      'local', SPEC, registry.AlgorithmConfig(client_lr=0.5),
      registry.TaskContext(num_classes=NUM_CLASSES, num_clients=3,
                           train_class_counts=train_counts))
  # Built after the process, as tasks/common.py does (Keras models made
  # before a TFF graph is traced are invalidated by it).
  evaluator = runner.Evaluator(SPEC, test, train_counts)
  config = runner.RunConfig(rounds=2, local_epochs=2, batch_size=8,
                            eval_every=5, seed=0, quiet=True,
                            output_dir=str(tmp_path))
  summary = runner.run_each_client(process, data, evaluator, config,
                                   extra_summary=dict(algo='local'))
  per_client = [c['balanced_accuracy'] for c in summary['local_clients']]
  # Client 0 saw class 0 alone: it predicts 0 for every test image.
  assert summary['local_clients'][0]['per_class_accuracy'] == [1.0, 0.0,
                                                               0.0, 0.0]
  assert per_client[0] == 0.25
  assert max(per_client[1:]) > 0.25
  assert summary['balanced_accuracy'] == np.mean(per_client)
  np.testing.assert_allclose(summary['balanced_accuracy_std'],
                             np.std(per_client))
  with open(os.path.join(tmp_path, report.SUMMARY_FILE)) as f:
    assert json.load(f)['num_local_clients'] == 3
  for k in range(3):
    assert os.path.exists(os.path.join(tmp_path, report.CLIENTS_DIR,
                                       str(k), report.METRICS_FILE))
  assert os.path.exists(os.path.join(tmp_path, report.CLIENTS_FILE))
