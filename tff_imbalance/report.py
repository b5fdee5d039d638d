"""A run directory's files: written round by round, read back afterwards.

The one module that knows the layout of a run's `--output_dir` (the PNG
figures are `plot`'s, drawn from what `read_run` gives):

  metrics.csv        one row per round, `CSV_COLUMNS` and then the process's
                     released scalars (`RELEASED_KEY`); empty cells where a
                     round has no evaluation;
  tensorboard/       the same rounds as TensorBoard scalars, through TFF's
                     `TensorBoardReleaseManager`;
  summary.json       the final evaluation at top level, `rounds`, `history`
                     (every evaluation's scalars), `selection`, `released`
                     and the task's facts;
  final_weights.npz  the global model as `trainable_<i>` / `non_trainable_<i>`;
  checkpoints/       the runner's resumable state (`checkpointing`);
  clients/<k>/, local_clients.csv
                     each client trained alone (`runner.run_each_client`):
                     one ordinary run directory per client and a row of final
                     metrics per client; the top-level summary.json holds the
                     statistics over clients (`summarize_clients`).

Every file is written whole or not at all (`write_atomically`), but
metrics.csv, which grows a row per round and may be cut short by a kill.
"""

import csv
import dataclasses
import json
import os
import shutil
from typing import Any, Callable, Optional, Sequence

import numpy as np

from tff_imbalance import checkpointing
from tff_imbalance import compat
from tff_imbalance import errors

tff = compat.tff

SCALAR_EVAL_KEYS = ('accuracy', 'balanced_accuracy', 'many_shot_accuracy',
                    'medium_shot_accuracy', 'few_shot_accuracy',
                    'minority_accuracy', 'macro_f1', 'auc')
_TRAIN_KEYS = ('train_loss', 'train_accuracy', 'train_examples')
# `clients`: the round's client indices, space-separated, in cohort order.
CSV_COLUMNS = ('round', 'round_seconds') + _TRAIN_KEYS + SCALAR_EVAL_KEYS + (
    'clients',)
_INTEGER_COLUMNS = frozenset({'round', 'train_examples'})
_TEXT_COLUMNS = frozenset({'clients'})
METRICS_FILE = 'metrics.csv'
SUMMARY_FILE = 'summary.json'
WEIGHTS_FILE = 'final_weights.npz'
TENSORBOARD_DIR = 'tensorboard'
CHECKPOINT_DIR = 'checkpoints'
# A process may put extra per-round measurements (e.g. the composition
# monitor's) under this top-level name: its scalars become metrics.csv columns
# and TensorBoard scalars, and summary.json gets `released` with the last value
# of each (vectors too) and the mean/min/max of each scalar over the rounds.
RELEASED_KEY = 'released'
CLIENTS_DIR = 'clients'
CLIENTS_FILE = 'local_clients.csv'


def write_atomically(path: str, write: Callable[[Any], None],
                     binary: bool = False) -> None:
  """Writes a file whole or not at all (a kill never leaves half a file)."""
  temp_path = path + '.tmp'
  with open(temp_path, 'wb' if binary else 'w',
            **({} if binary else {'newline': ''})) as f:
    write(f)
  os.replace(temp_path, path)


def _write_json(path: str, value: Any) -> None:
  write_atomically(path, lambda f: json.dump(value, f, indent=2,
                                             allow_nan=False))


# Rounds: what one round releases.


def released_scalar_names(
    process: tff.learning.templates.LearningProcess) -> tuple[str, ...]:
  """Names of the scalars the process releases each round (see RELEASED_KEY)."""
  metrics = process.next.type_signature.result.metrics.member
  if RELEASED_KEY not in tff.structure.name_list(metrics):
    return ()
  return tuple(name for name, value_type in tff.structure.to_elements(
      metrics[RELEASED_KEY]) if not value_type.shape)


def released_values(metrics: Any) -> dict[str, Any]:
  """A round's released measurements: scalars as floats, vectors as lists."""
  if not metrics or RELEASED_KEY not in metrics:
    return {}
  return {name: np.asarray(value).tolist()
          for name, value in metrics[RELEASED_KEY].items()}


def _train_metrics(metrics: Any) -> dict[str, Any]:
  """Loss, accuracy and examples from TFF's or our client-work measurements."""
  train = metrics['client_work']['train']
  accuracy = train.get('accuracy', train.get('sparse_categorical_accuracy'))
  return dict(train_loss=float(train['loss']),
              train_accuracy=float(accuracy),
              train_examples=int(train['num_examples']))


def round_row(round_num: int, seconds: float, metrics: Any,
              client_indices: Sequence[int],
              evaluated: Optional[dict[str, Any]]) -> dict[str, Any]:
  """One round's metrics.csv row.

  Args:
    round_num: the round (1-based).
    seconds: the wall time of the round's `next`.
    metrics: the round's measurements from `next`.
    client_indices: the round's cohort, in cohort order.
    evaluated: the evaluation metrics when the round was evaluated, or None.

  Returns:
    The row: `CSV_COLUMNS` (evaluation keys only when evaluated) and the
    released scalars.
  """
  row = dict(round=round_num, round_seconds=round(seconds, 4),
             **_train_metrics(metrics),
             clients=' '.join(str(int(k)) for k in client_indices))
  row.update({name: value for name, value in released_values(metrics).items()
              if not isinstance(value, list)})
  if evaluated is not None:
    row.update({key: evaluated.get(key) for key in SCALAR_EVAL_KEYS})
  return row


def _releasable(row: dict[str, Any],
                evaluated: Optional[dict[str, Any]],
                released_names: Sequence[str]) -> dict[str, Any]:
  """A round's values for TensorBoard: numbers only, None left out."""
  value = {'train': {key[len('train_'):]: row[key] for key in _TRAIN_KEYS},
           'round_seconds': row['round_seconds']}
  if evaluated is not None:
    value['eval'] = {key: evaluated[key] for key in SCALAR_EVAL_KEYS
                     if evaluated.get(key) is not None}
    per_class = evaluated.get('per_class_accuracy') or []
    value['eval']['per_class_accuracy'] = {
        str(c): a for c, a in enumerate(per_class) if a is not None}
  if released_names:
    value[RELEASED_KEY] = {name: row[name] for name in released_names
                           if row.get(name) is not None}
  return value


class MetricsWriter:
  """Releases each round to metrics.csv and TensorBoard in one directory.

  A resumed run keeps the CSV rows up to its checkpoint and drops the later
  ones (their rounds are redone); the TensorBoard events, which cannot be cut,
  are rewritten from the kept rows so that no round appears twice.

  Attributes:
    rows: every row of the run so far, kept ones included.
  """

  def __init__(self, output_dir: str, released_names: tuple[str, ...] = (),
               resumed_round: Optional[int] = None,
               history: Sequence[dict[str, Any]] = ()):
    """Starts (or, after a resume, cuts back) the run's metrics.

    Args:
      output_dir: the run directory.
      released_names: the process's released scalars (extra CSV columns).
      resumed_round: the checkpointed round a resumed run continues from;
        None for a fresh run.
      history: the evaluations up to `resumed_round` (for TensorBoard).
    """
    self._csv_path = os.path.join(output_dir, METRICS_FILE)
    self._columns = CSV_COLUMNS + released_names
    self._released_names = released_names
    kept_rows = []
    if resumed_round is not None:
      kept_rows = [r for r in _read_rows_if_any(self._csv_path)
                   if r['round'] <= resumed_round]
    self.rows = list(kept_rows)
    write_atomically(self._csv_path,
                     lambda f: self._write_rows(f, kept_rows))
    self._csv_handle = open(self._csv_path, 'a', newline='')
    self._csv_writer = csv.DictWriter(self._csv_handle, self._columns,
                                      extrasaction='ignore')
    tensorboard_dir = os.path.join(output_dir, TENSORBOARD_DIR)
    shutil.rmtree(tensorboard_dir, ignore_errors=True)
    self._tensorboard = tff.program.TensorBoardReleaseManager(tensorboard_dir)
    evaluations = {e['round']: e for e in history}
    for row in kept_rows:
      self._release_to_tensorboard(row, evaluations.get(row['round']))

  def _write_rows(self, handle, rows: list[dict[str, Any]]) -> None:
    writer = csv.DictWriter(handle, self._columns, extrasaction='ignore')
    writer.writeheader()
    writer.writerows(rows)

  def _release_to_tensorboard(self, row: dict[str, Any],
                              evaluated: Optional[dict[str, Any]]) -> None:
    checkpointing.run_sync(self._tensorboard.release(
        _releasable(row, evaluated, self._released_names), row['round']))

  def write(self, row: dict[str, Any],
            evaluated: Optional[dict[str, Any]]) -> None:
    """Releases one round: its CSV row and, if evaluated, its metrics."""
    self._csv_writer.writerow(row)
    self._csv_handle.flush()
    self.rows.append(row)
    self._release_to_tensorboard(row, evaluated)

  def close(self) -> None:
    self._csv_handle.close()
    # The release manager has no close(); its summary writer closes, and
    # flushes, when the manager is dropped.
    self._tensorboard = None


# The end of a run: summary.json and final_weights.npz.


def run_summary(history: list[dict[str, Any]], rounds: int,
                extra_summary: Optional[dict[str, Any]] = None,
                selection: Optional[dict[str, Any]] = None,
                last_released: Optional[dict[str, Any]] = None,
                rows: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
  """summary.json of a run.

  Args:
    history: every evaluation, with its 'round'; the last is the final one.
    rounds: the run's number of rounds.
    extra_summary: JSON-able facts of the task (data statistics, flags).
    selection: the selector's own summary, if it has one.
    last_released: the last round's `released_values`, if any.
    rows: the run's metrics.csv rows (per-round statistics of the released
      scalars).

  Returns:
    The final evaluation at top level, `rounds`, `history` (the scalar
    metrics of every evaluation), the extra facts, `selection` and
    `released` (see RELEASED_KEY) where given.
  """
  final_eval = {k: v for k, v in history[-1].items() if k != 'round'}
  scalar_history = [dict(round=e['round'],
                         **{k: e.get(k) for k in SCALAR_EVAL_KEYS})
                    for e in history]
  summary = dict(final_eval, rounds=rounds, history=scalar_history,
                 **(extra_summary or {}))
  if selection is not None:
    summary['selection'] = selection
  if last_released:
    summary[RELEASED_KEY] = _released_summary(last_released, rows)
  return summary


def _released_summary(last: dict[str, Any],
                      rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """Last value of every released measurement, and per-round scalar stats."""
  summary = {}
  for name, value in last.items():
    summary[name] = dict(last=value)
    per_round = [r[name] for r in rows if r.get(name) is not None]
    if per_round and not isinstance(value, list):
      summary[name].update(mean=float(np.mean(per_round)),
                           min=float(np.min(per_round)),
                           max=float(np.max(per_round)),
                           rounds=len(per_round))
  return summary


def write_results(output_dir: str, summary: dict[str, Any],
                  model_weights) -> None:
  """Writes summary.json and the global model as final_weights.npz.

  Args:
    output_dir: the run directory.
    summary: from `run_summary`.
    model_weights: the final global `tff.learning.models.ModelWeights`.
  """
  _write_json(os.path.join(output_dir, SUMMARY_FILE), summary)
  arrays_by_name = {f'trainable_{i}': np.asarray(w)
                    for i, w in enumerate(model_weights.trainable)}
  arrays_by_name.update({f'non_trainable_{i}': np.asarray(w)
                         for i, w in enumerate(model_weights.non_trainable)})
  # Named numpy arrays: np.load reads them without pickle.
  write_atomically(os.path.join(output_dir, WEIGHTS_FILE),
                   lambda f: np.savez(f, **arrays_by_name), binary=True)


# Each client trained alone: the statistics over clients.


def client_run_dir(output_dir: str, client: int) -> str:
  """The run directory of client `client` trained alone."""
  return os.path.join(output_dir, CLIENTS_DIR, str(client))


def summarize_clients(finals: list[dict[str, Any]]) -> dict[str, Any]:
  """Mean, std, min and max over clients of every scalar metric.

  A metric that is None for a client (e.g. AUC with a class absent from the
  test predictions) is left out of that metric's statistics; per-class
  accuracy is averaged class by class. The spread is the population standard
  deviation.

  Args:
    finals: each client's final evaluation metrics.

  Returns:
    `{metric: mean, metric_std, metric_min, metric_max, per_class_accuracy}`.
  """
  summary = {}
  for key in SCALAR_EVAL_KEYS:
    values = np.array([f[key] for f in finals if f.get(key) is not None],
                      np.float64)
    if values.size == 0:
      summary[key] = None
      continue
    summary[key] = float(values.mean())
    summary[f'{key}_std'] = float(values.std())
    summary[f'{key}_min'] = float(values.min())
    summary[f'{key}_max'] = float(values.max())
  per_class = [f.get('per_class_accuracy') or [] for f in finals]
  num_classes = max(len(p) for p in per_class)
  summary['per_class_accuracy'] = [
      float(np.mean(values)) if values else None
      for values in ([p[c] for p in per_class
                      if c < len(p) and p[c] is not None]
                     for c in range(num_classes))]
  return summary


def write_client_results(output_dir: str, summary: dict[str, Any],
                         finals: list[dict[str, Any]]) -> None:
  """The top level of an each-client-alone run: summary.json (the statistics
  over clients) and local_clients.csv (one row of final metrics per client)."""
  _write_json(os.path.join(output_dir, SUMMARY_FILE), summary)
  columns = ('client', 'client_id') + SCALAR_EVAL_KEYS

  def write_rows(handle):
    writer = csv.DictWriter(handle, columns, extrasaction='ignore')
    writer.writeheader()
    writer.writerows(finals)

  write_atomically(os.path.join(output_dir, CLIENTS_FILE), write_rows)


# Reading a run back.


@dataclasses.dataclass(frozen=True)
class RunResults:
  """What a run directory holds, read back.

  Attributes:
    rows: metrics.csv's complete rows, numbers as numbers, empty cells as
      None.
    summary: summary.json, or None for a run still going or killed.
  """
  rows: tuple[dict[str, Any], ...]
  summary: Optional[dict[str, Any]]

  def curve(self, metric: str) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """(rounds, values) of `metric` over the rounds that have it."""
    kept = [r for r in self.rows if r.get(metric) is not None]
    return (tuple(r['round'] for r in kept),
            tuple(float(r[metric]) for r in kept))


def read_run(run_dir: str) -> RunResults:
  """Reads a run directory's metrics.csv and (if present) summary.json.

  Args:
    run_dir: a run's --output_dir.

  Returns:
    The run's `RunResults`.

  Raises:
    errors.UserInputError: if the directory has no readable metrics.csv.
  """
  metrics_path = os.path.join(run_dir, METRICS_FILE)
  try:
    rows = _read_rows(metrics_path)
  except OSError as e:
    raise errors.UserInputError(
        f'cannot read {metrics_path}: {e.strerror}; pass the --output_dir of '
        'a run.') from None
  return RunResults(rows=tuple(rows), summary=read_summary(run_dir))


def read_summary(run_dir: str) -> Optional[dict[str, Any]]:
  """A run directory's summary.json, or None before the run has finished."""
  path = os.path.join(run_dir, SUMMARY_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _read_rows_if_any(path: str) -> list[dict[str, Any]]:
  return _read_rows(path) if os.path.exists(path) else []


def _read_rows(path: str) -> list[dict[str, Any]]:
  with open(path, newline='') as f:
    rows = [_parsed_row(r) for r in csv.DictReader(f)]
  # A kill can cut the last line short; a row without its round is dropped.
  return [r for r in rows if isinstance(r.get('round'), int)]


def _parsed_row(row: dict[str, str]) -> dict[str, Any]:
  """A metrics.csv row with numbers as numbers (empty cells as None)."""
  parsed = {}
  for key, text in row.items():
    if key is None:
      continue  # Surplus cells (DictReader's None key): not ours to keep.
    if key in _TEXT_COLUMNS or text is None:
      parsed[key] = text
    elif text == '':
      parsed[key] = None
    else:
      try:
        parsed[key] = int(text) if key in _INTEGER_COLUMNS else float(text)
      except ValueError:
        parsed[key] = None  # A line cut short by a kill.
  return parsed
