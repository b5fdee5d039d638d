"""Fed-Focal end to end: per-slot validation losses drive psi selection."""

import numpy as np

from tff_imbalance import runner
from tff_imbalance.data import arrays
from tff_imbalance.data import federated
from tff_imbalance.learning import registry
from tff_imbalance.learning import selection
from tff_imbalance.models import spec as spec_lib

NUM_CLIENTS, COHORT = 6, 3


class RecordingSelector(selection.PsiSelector):
  """A psi selector that remembers each round's cohort and improved flags."""

  def __init__(self, *args):
    super().__init__(*args)
    self.cohorts, self.improved = [], []

  def select(self, round_num, measurements=None):
    if measurements is not None:
      self.improved.append(selection.improved_slots(measurements))
    cohort = super().select(round_num, measurements)
    self.cohorts.append(cohort)
    return cohort


def _data():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 4, 240).astype(np.int64)
  x = (rng.random((240, 6, 6, 1)) * 0.3 + y[:, None, None, None] / 4).astype(
      np.float32)
  pool = arrays.LabeledArrays(x=x, y=y)
  parts = np.array_split(np.arange(240), NUM_CLIENTS)
  return pool, federated.build_federated_data(
      pool, parts, 4, validation_fraction=0.25, seed=0)


def test_fedfocal_keeps_every_improved_client_with_psi_one():
  pool, data = _data()
  spec = spec_lib.ModelSpec('mlp', (6, 6, 1), 4, seed=0)
  config = registry.AlgorithmConfig(client_lr=0.1, clients_per_round=COHORT,
                                    psi=1.0)
  context = registry.TaskContext(num_classes=4, num_clients=NUM_CLIENTS,
                                 train_class_counts=np.ones(4))
  process = registry.build_process('fedfocal', spec, config, context)
  selector = RecordingSelector(NUM_CLIENTS, COHORT, 1.0, 0)
  no_evaluation = lambda weights: dict.fromkeys(runner.SCALAR_EVAL_KEYS, 0.0)
  runner.run(process, data, selector, no_evaluation,
             runner.RunConfig(rounds=4, local_epochs=1, batch_size=8,
                              eval_every=10, seed=0, quiet=True))
  del pool
  assert len(selector.improved) == 3
  assert any(flags.any() for flags in selector.improved)
  for last, improved, cohort in zip(selector.cohorts, selector.improved,
                                    selector.cohorts[1:]):
    assert set(last[improved]) <= set(cohort)
    assert len(set(cohort)) == COHORT
