"""The one training loop shared by every task and algorithm.

Per round: the client selector picks a fixed number of client ids (a fixed
cohort size keeps TFF's worker from leaking one executor per distinct size),
the runner builds their datasets, calls the process's `next`, evaluates the
global model on the balanced test set every `eval_every` rounds, and appends
one row to `metrics.csv`. At the end it writes `summary.json` with every
evaluation metric under plain snake_case keys. The runner knows nothing about
losses or algorithms: it sees a `LearningProcess` and datasets.
"""

import csv
import dataclasses
import json
import os
import time
from typing import Any, Callable, Optional

import numpy as np

from tff_imbalance import compat
from tff_imbalance import errors
from tff_imbalance import evaluation
from tff_imbalance.data import arrays
from tff_imbalance.data import federated
from tff_imbalance.models import spec as spec_lib

tff = compat.tff

SCALAR_EVAL_KEYS = ('accuracy', 'balanced_accuracy', 'many_shot_accuracy',
                    'medium_shot_accuracy', 'few_shot_accuracy',
                    'minority_accuracy', 'macro_f1', 'auc')
CSV_COLUMNS = ('round', 'round_seconds', 'train_loss', 'train_accuracy',
               'train_examples') + SCALAR_EVAL_KEYS


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """How many rounds and how each client trains.

  Attributes:
    rounds: number of federated rounds.
    local_epochs: passes over the local data per round.
    batch_size: local mini-batch size.
    eval_every: evaluate every this many rounds (and always after the last).
    seed: seeds local shuffling.
    output_dir: where metrics.csv and summary.json go (None: nowhere).
    quiet: no per-round log lines.
  """
  rounds: int
  local_epochs: int
  batch_size: int
  eval_every: int
  seed: int
  output_dir: Optional[str] = None
  quiet: bool = False

  def __post_init__(self):
    for name in ('rounds', 'local_epochs', 'batch_size', 'eval_every'):
      if getattr(self, name) < 1:
        raise errors.UserInputError(
            f'--{name} must be >= 1 (got {getattr(self, name)}).')


class Evaluator:
  """Balanced-test-set metrics of a process's global model."""

  def __init__(self, model_spec: spec_lib.ModelSpec,
               test: arrays.LabeledArrays, train_class_counts: np.ndarray,
               minority_classes=None):
    self._model = model_spec.build_keras()
    self._test = test
    self._train_class_counts = np.asarray(train_class_counts)
    self._minority_classes = minority_classes

  def __call__(self, model_weights) -> dict[str, Any]:
    model_weights.assign_weights_to(self._model)
    logits = evaluation.predict_logits(self._model, self._test.x)
    return evaluation.classification_metrics(
        self._test.y, logits, self._train_class_counts,
        minority_classes=self._minority_classes)


def _train_metrics(metrics: Any) -> dict[str, float]:
  """Loss, accuracy and examples from TFF's or our client-work measurements."""
  train = metrics['client_work']['train']
  accuracy = train.get('accuracy', train.get('sparse_categorical_accuracy'))
  return dict(train_loss=float(train['loss']),
              train_accuracy=float(accuracy),
              train_examples=int(train['num_examples']))


def _open_csv(output_dir: Optional[str]):
  if output_dir is None:
    return None, None
  try:
    os.makedirs(output_dir, exist_ok=True)
    handle = open(os.path.join(output_dir, 'metrics.csv'), 'w', newline='')
  except OSError as e:
    raise errors.UserInputError(
        f'cannot write to --output_dir={output_dir}: {e.strerror}; choose a '
        'writable directory.') from None
  writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
  writer.writeheader()
  return handle, writer


def run(process: tff.learning.templates.LearningProcess,
        data: federated.FederatedData,
        selector: Any,
        evaluate: Callable[[Any], dict[str, Any]],
        config: RunConfig,
        extra_summary: Optional[dict[str, Any]] = None) -> dict[str, Any]:
  """Runs `config.rounds` rounds of `process` and returns the summary.

  Args:
    process: the algorithm's learning process.
    data: the clients' datasets.
    selector: chooses each round's client indices (see `selection`); its
      `needs_validation` says whether clients get validation data and slots.
    evaluate: maps the global `ModelWeights` to evaluation metrics.
    config: rounds, local training and output settings.
    extra_summary: JSON-able facts added to summary.json (data statistics,
      flags).

  Returns:
    The summary dict (also written to `summary.json` when there is an output
    directory): the final evaluation metrics at top level, plus `history`.
  """
  csv_handle, csv_writer = _open_csv(config.output_dir)
  state = process.initialize()
  measurements = None
  history = []
  final_eval = {}
  try:
    for round_num in range(1, config.rounds + 1):
      client_indices = selector.select(round_num, measurements)
      inputs = data.round_inputs(
          client_indices, round_num=round_num,
          local_epochs=config.local_epochs, batch_size=config.batch_size,
          seed=config.seed, with_validation=selector.needs_validation)
      start = time.monotonic()
      output = process.next(state, inputs)
      seconds = time.monotonic() - start
      state, measurements = output.state, output.metrics
      row = dict(round=round_num, round_seconds=round(seconds, 4),
                 **_train_metrics(measurements))
      if round_num % config.eval_every == 0 or round_num == config.rounds:
        final_eval = evaluate(process.get_model_weights(state))
        row.update({k: final_eval[k] for k in SCALAR_EVAL_KEYS})
        history.append(dict(round=round_num, **{
            k: final_eval[k] for k in SCALAR_EVAL_KEYS}))
      if csv_writer is not None:
        csv_writer.writerow(row)
        csv_handle.flush()
      if not config.quiet:
        balanced = final_eval.get('balanced_accuracy')
        print(f'round {round_num}/{config.rounds}  {seconds:.2f}s  '
              f'train_loss {row["train_loss"]:.4f}  balanced_acc '
              f'{"-" if balanced is None else f"{balanced:.4f}"}',
              flush=True)
  finally:
    if csv_handle is not None:
      csv_handle.close()
  summary = dict(final_eval, rounds=config.rounds, history=history,
                 **(extra_summary or {}))
  if config.output_dir is not None:
    with open(os.path.join(config.output_dir, 'summary.json'), 'w') as f:
      json.dump(summary, f, indent=2, allow_nan=False)
  return summary
