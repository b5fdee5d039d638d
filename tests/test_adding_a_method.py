"""docs/ARCHITECTURE.md's "Adding a method", done: a method in one file.

`toy_label_smoothing.py` (beside this file, under 60 lines) declares label
smoothing; registered with `registry.register`, it trains through the shared
runner like a built-in method, and its option becomes a task flag.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tff_imbalance import losses
from tff_imbalance import runner
from tff_imbalance.data import arrays
from tff_imbalance.data import federated
from tff_imbalance.learning import registry
from tff_imbalance.learning import selection
from tff_imbalance.models import spec as spec_lib

from tests import toy_label_smoothing as toy

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
NUM_CLIENTS, COHORT, NUM_CLASSES = 4, 2, 3


@pytest.fixture
def registered(monkeypatch):
  # A copy: the method is gone again after the test.
  monkeypatch.setattr(registry, 'ALGORITHMS', dict(registry.ALGORITHMS))
  registry.register(toy.LABEL_SMOOTHING)


def _examples(n, seed):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, NUM_CLASSES, n).astype(np.int64)
  x = (rng.random((n, 4, 4, 1)) * 0.3 + y[:, None, None, None] / 3).astype(
      np.float32)
  return arrays.LabeledArrays(x=x, y=y)


def test_the_method_file_stays_small():
  with open(os.path.join(TESTS, 'toy_label_smoothing.py')) as f:
    assert len(f.readlines()) < 60


def test_the_loss_is_cross_entropy_on_smoothed_targets():
  labels = tf.constant([0, 2])
  logits = tf.constant([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
  np.testing.assert_allclose(toy.smoothed_cross_entropy(0.0)(labels, logits),
                             losses.cross_entropy(labels, logits), rtol=1e-6)
  log_p = tf.nn.log_softmax(logits).numpy()
  expected = -(0.7 * log_p[[0, 1], [0, 2]] + 0.1 * log_p.sum(axis=1))
  np.testing.assert_allclose(toy.smoothed_cross_entropy(0.3)(labels, logits),
                             expected, rtol=1e-6)


def test_a_registered_method_runs_end_to_end(registered, tmp_path):
  del registered  # Used for its effect.
  with pytest.raises(ValueError, match='registered already'):
    registry.register(toy.LABEL_SMOOTHING)
  pool = _examples(80, 0)
  data = federated.build_federated_data(
      pool, np.array_split(np.arange(80), NUM_CLIENTS), NUM_CLASSES,
      validation_fraction=0.0, seed=0)
  counts = np.bincount(data.train_labels(), minlength=NUM_CLASSES)
  spec = spec_lib.ModelSpec('mlp', (4, 4, 1), NUM_CLASSES, seed=0)
  process = registry.build_process(
      'label_smoothing', spec,
      registry.AlgorithmConfig(client_lr=0.1, clients_per_round=COHORT),
      registry.TaskContext(NUM_CLASSES, NUM_CLIENTS, counts),
      registry.make_options('label_smoothing', label_smoothing=0.2))
  summary = runner.run(
      process, data, selection.UniformSelector(NUM_CLIENTS, COHORT, seed=0),
      runner.Evaluator(spec, _examples(30, 1), counts),
      runner.RunConfig(rounds=2, local_epochs=1, batch_size=8, eval_every=1,
                       seed=0, output_dir=str(tmp_path), quiet=True))
  assert [h['round'] for h in summary['history']] == [1, 2]
  assert 0 <= summary['balanced_accuracy'] <= 1
  assert (tmp_path / 'metrics.csv').exists()


def test_its_option_is_a_task_flag():
  # Registered before the task module is imported, as register() says; a
  # bad value stops with the generated flag's name, before any data loads.
  program = ('from tests import toy_label_smoothing as toy; '
             'from tff_imbalance.learning import registry; '
             'registry.register(toy.LABEL_SMOOTHING); '
             'from tff_imbalance.tasks import mnist_lt; mnist_lt.run()')
  result = subprocess.run(
      [sys.executable, '-c', program, '--algo=label_smoothing',
       '--label_smoothing=1.5', '--rounds=1'],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      stdin=subprocess.DEVNULL)
  assert result.returncode == 2, result.stderr
  assert '--label_smoothing must be in [0, 1) (got 1.5)' in result.stderr
