"""The one training loop shared by every task and algorithm.

Per round: the client selector picks a fixed number of client ids (a fixed
cohort size keeps TFF's worker from leaking one executor per distinct size)
from the previous round's measurements, the runner builds their datasets,
calls the process's `next`, evaluates the global model on the balanced test
set every `eval_every` rounds, releases the round's metrics (a row of
`metrics.csv`, TensorBoard scalars under `tensorboard/`) and, every
`checkpoint_every` rounds, saves a checkpoint (`checkpointing`): the process
state, the selector state, the round, its measurements and the evaluation
history as one TFF program state. A resumed run continues from the latest
checkpoint and redoes the rounds after it exactly as the uninterrupted run
would have: the same cohorts and the same weights.

At the end it writes `summary.json` with every evaluation metric under plain
snake_case keys, the final global model as `final_weights.npz`, and the
plots `curves.png` and `per_class.png`. The runner knows nothing about losses
or algorithms: it sees a `LearningProcess`, datasets and a selector.
"""

import csv
import dataclasses
import json
import os
import shutil
import tempfile
import time
from typing import Any, Callable, Optional, Protocol

import numpy as np

from tff_imbalance import checkpointing
from tff_imbalance import compat
from tff_imbalance import errors
from tff_imbalance import evaluation
from tff_imbalance import plot
from tff_imbalance.data import arrays
from tff_imbalance.data import federated
from tff_imbalance.models import spec as spec_lib

tff = compat.tff

SCALAR_EVAL_KEYS = ('accuracy', 'balanced_accuracy', 'many_shot_accuracy',
                    'medium_shot_accuracy', 'few_shot_accuracy',
                    'minority_accuracy', 'macro_f1', 'auc')
# `clients`: the round's client indices, space-separated, in cohort order.
CSV_COLUMNS = ('round', 'round_seconds', 'train_loss', 'train_accuracy',
               'train_examples') + SCALAR_EVAL_KEYS + ('clients',)
METRICS_FILE = 'metrics.csv'
SUMMARY_FILE = 'summary.json'
WEIGHTS_FILE = 'final_weights.npz'
# A process may put extra per-round measurements (e.g. the composition
# monitor's) under this top-level name: its scalars become metrics.csv columns
# and TensorBoard scalars, and summary.json gets `released` with the last value
# of each (vectors too) and the mean/min/max of each scalar over the rounds.
RELEASED_KEY = 'released'
TENSORBOARD_DIR = 'tensorboard'
CHECKPOINT_DIR = 'checkpoints'


class Selector(Protocol):
  """What the runner needs of a client selector (see `learning.selection`).

  Attributes:
    needs_validation: whether clients get validation data and cohort slots.
  """
  needs_validation: bool

  def select(self, round_num: int, measurements: Any) -> np.ndarray:
    """Round `round_num`'s client indices from last round's measurements."""

  def get_state(self) -> dict[str, Any]:
    """The selector's state: a dict of numpy arrays and ints."""

  def set_state(self, state: dict[str, Any]) -> None:
    """Restores a state from `get_state` (values may come back as arrays)."""

  # Optional: `observe_round(round_num, cohort, measurements, model_weights)`,
  # called after each round with the new global weights (psi selection learns
  # there), and `summary() -> dict`, written to summary.json as `selection`.


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """How many rounds, how each client trains, and where results go.

  Attributes:
    rounds: number of federated rounds.
    local_epochs: passes over the local data per round.
    batch_size: local mini-batch size.
    eval_every: evaluate every this many rounds (and always after the last).
    seed: seeds local shuffling.
    output_dir: where metrics, checkpoints, summary and plots go (None:
      nowhere).
    quiet: no per-round log lines.
    checkpoint_every: save a checkpoint every this many rounds (and after the
      last); 0 never.
    resume: continue from the latest checkpoint in `output_dir`.
  """
  rounds: int
  local_epochs: int
  batch_size: int
  eval_every: int
  seed: int
  output_dir: Optional[str] = None
  quiet: bool = False
  checkpoint_every: int = 0
  resume: bool = False

  def __post_init__(self):
    for name in ('rounds', 'local_epochs', 'batch_size', 'eval_every'):
      if getattr(self, name) < 1:
        raise errors.UserInputError(
            f'--{name} must be >= 1 (got {getattr(self, name)}).')
    if self.checkpoint_every < 0:
      raise errors.UserInputError(
          f'--checkpoint_every must be >= 0 (got {self.checkpoint_every}); 0 '
          'saves no checkpoints.')
    if self.output_dir is None and (self.checkpoint_every or self.resume):
      flag = '--resume' if self.resume else '--checkpoint_every'
      raise errors.UserInputError(
          f'{flag} needs --output_dir (checkpoints are kept there).')

  @property
  def checkpoint_dir(self) -> Optional[str]:
    if self.output_dir is None:
      return None
    return os.path.join(self.output_dir, CHECKPOINT_DIR)


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


def wants_client_index(
    process: tff.learning.templates.LearningProcess) -> bool:
  """Whether the process's client data asks for each client's population
  index (a `federated.CLIENT_INDEX` field): the process declares its inputs,
  the runner stays algorithm-agnostic."""
  return _client_data_has(process, federated.CLIENT_INDEX)


def wants_population(
    process: tff.learning.templates.LearningProcess) -> bool:
  """Whether the process's client data asks for every client of the
  population each round (a `federated.EVALUATION` field: CLIMB's dual step
  evaluates every client; see `FederatedData.round_inputs`)."""
  return _client_data_has(process, federated.EVALUATION)


def _client_data_has(process: tff.learning.templates.LearningProcess,
                     field: str) -> bool:
  client_data_type = process.next.type_signature.parameter[1].member
  return isinstance(client_data_type, tff.StructType) and any(
      name == field
      for name, _ in tff.structure.iter_elements(client_data_type))


def _train_metrics(metrics: Any) -> dict[str, float]:
  """Loss, accuracy and examples from TFF's or our client-work measurements."""
  train = metrics['client_work']['train']
  accuracy = train.get('accuracy', train.get('sparse_categorical_accuracy'))
  return dict(train_loss=float(train['loss']),
              train_accuracy=float(accuracy),
              train_examples=int(train['num_examples']))



def _no_checkpoint_error(config: RunConfig) -> errors.UserInputError:
  return errors.UserInputError(
      f'--resume: no checkpoint in {config.checkpoint_dir}; run without '
      '--resume (with --checkpoint_every=N) to start this run.')


def check_output_dir(config: RunConfig) -> None:
  """Fails early, before any work, if the output directory cannot serve.

  Args:
    config: the run's settings.

  Raises:
    errors.UserInputError: if `output_dir` is not a writable directory, if
      `resume` finds no checkpoint there, or if a fresh run would mix its
      results with the checkpoints of an earlier one.
  """
  if config.output_dir is None:
    return
  try:
    os.makedirs(config.output_dir, exist_ok=True)
    with tempfile.TemporaryFile(dir=config.output_dir):
      pass
  except OSError as e:
    raise errors.UserInputError(
        f'cannot write to --output_dir={config.output_dir}: {e.strerror}; '
        'choose a writable directory.') from None
  has_checkpoints = bool(checkpointing.saved_rounds(config.checkpoint_dir))
  if config.resume and not has_checkpoints:
    raise _no_checkpoint_error(config)
  if not config.resume and has_checkpoints:
    raise errors.UserInputError(
        f'--output_dir={config.output_dir} holds the checkpoints of an earlier '
        'run; pass --resume to continue it or choose another --output_dir.')


def write_atomically(path: str, write: Callable[[Any], None],
                      binary: bool = False) -> None:
  """Writes a file whole or not at all (a kill never leaves half a file)."""
  temp_path = path + '.tmp'
  with open(temp_path, 'wb' if binary else 'w',
            **({} if binary else {'newline': ''})) as f:
    write(f)
  os.replace(temp_path, path)


def _releasable(row: dict[str, Any],
                evaluated: Optional[dict[str, Any]]) -> dict[str, Any]:
  """A round's values for TensorBoard: numbers only, None left out."""
  value = {'train': {key[len('train_'):]: row[key]
                     for key in ('train_loss', 'train_accuracy',
                                 'train_examples')},
           'round_seconds': row['round_seconds']}
  if evaluated is not None:
    value['eval'] = {key: evaluated[key] for key in SCALAR_EVAL_KEYS
                     if evaluated.get(key) is not None}
    per_class = evaluated.get('per_class_accuracy') or []
    value['eval']['per_class_accuracy'] = {
        str(c): a for c, a in enumerate(per_class) if a is not None}
  return value


def released_scalar_names(
    process: tff.learning.templates.LearningProcess) -> tuple[str, ...]:
  """Names of the scalars the process releases each round (see RELEASED_KEY)."""
  metrics = process.next.type_signature.result.metrics.member
  if RELEASED_KEY not in tff.structure.name_list(metrics):
    return ()
  return tuple(name for name, value_type in tff.structure.to_elements(
      metrics[RELEASED_KEY]) if not value_type.shape)


def _released_values(metrics: Any) -> dict[str, Any]:
  """A round's released measurements: scalars as floats, vectors as lists."""
  if not metrics or RELEASED_KEY not in metrics:
    return {}
  return {name: np.asarray(value).tolist()
          for name, value in metrics[RELEASED_KEY].items()}


def _released_summary(last: dict[str, Any],
                      rows: list[dict[str, Any]]) -> dict[str, Any]:
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


class _MetricsWriter:
  """Releases each round to metrics.csv and TensorBoard in one directory.

  A resumed run keeps the CSV rows up to its checkpoint and drops the later
  ones (their rounds are redone); the TensorBoard events, which cannot be cut,
  are rewritten from the kept rows so that no round appears twice.
  """

  def __init__(self, output_dir: str,
               resumed: Optional[checkpointing.RunState],
               released_names: tuple[str, ...] = ()):
    self._csv_path = os.path.join(output_dir, METRICS_FILE)
    self._columns = CSV_COLUMNS + released_names
    self._released_names = released_names
    kept_rows = self._kept_rows(resumed.round_num) if resumed else []
    self.rows = list(kept_rows)
    write_atomically(self._csv_path,
                      lambda f: self._write_rows(f, kept_rows))
    self._csv_handle = open(self._csv_path, 'a', newline='')
    self._csv_writer = csv.DictWriter(self._csv_handle, self._columns,
                                      extrasaction='ignore')
    tensorboard_dir = os.path.join(output_dir, TENSORBOARD_DIR)
    shutil.rmtree(tensorboard_dir, ignore_errors=True)
    self._tensorboard = tff.program.TensorBoardReleaseManager(tensorboard_dir)
    evaluations = {e['round']: e for e in resumed.history} if resumed else {}
    for row in kept_rows:
      self._release_to_tensorboard(row, evaluations.get(row['round']))

  def _kept_rows(self, last_round: int) -> list[dict[str, Any]]:
    if not os.path.exists(self._csv_path):
      return []
    with open(self._csv_path, newline='') as f:
      rows = [_parsed_row(r) for r in csv.DictReader(f)]
    # A kill can cut the last line short; it is after the checkpoint anyway.
    return [r for r in rows
            if isinstance(r['round'], int) and r['round'] <= last_round]

  def _write_rows(self, handle, rows: list[dict[str, Any]]) -> None:
    writer = csv.DictWriter(handle, self._columns, extrasaction='ignore')
    writer.writeheader()
    writer.writerows(rows)

  def _release_to_tensorboard(self, row: dict[str, Any],
                              evaluated: Optional[dict[str, Any]]) -> None:
    value = _releasable(row, evaluated)
    if self._released_names:
      value[RELEASED_KEY] = {name: row[name] for name in self._released_names
                             if row.get(name) is not None}
    checkpointing.run_sync(self._tensorboard.release(value, row['round']))

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


def _parsed_row(row: dict[str, str]) -> dict[str, Any]:
  """A metrics.csv row with numbers as numbers (empty cells as None)."""
  parsed = {}
  for key, text in row.items():
    if key is None:
      continue  # Surplus cells (DictReader's None key): not ours to keep.
    if key == 'clients' or text is None:
      parsed[key] = text
    elif text == '':
      parsed[key] = None
    else:
      try:
        parsed[key] = int(text) if key in ('round',
                                           'train_examples') else float(text)
      except ValueError:
        parsed[key] = None  # A line cut short by a kill.
  return parsed


def _restore(checkpoints: checkpointing.CheckpointManager,
             template: checkpointing.RunState,
             config: RunConfig) -> checkpointing.RunState:
  restored = checkpoints.load_latest(template)
  if restored is None:
    raise _no_checkpoint_error(config)
  if restored.round_num > config.rounds:
    raise errors.UserInputError(
        f'--rounds={config.rounds} is before the checkpointed round '
        f'{restored.round_num} in {checkpoints.root_dir}; pass --rounds >= '
        f'{restored.round_num} to resume this run.')
  return restored


def _save_weights(path: str, model_weights) -> None:
  """The global model as named numpy arrays (np.load, no pickle)."""
  arrays_by_name = {f'trainable_{i}': np.asarray(w)
                    for i, w in enumerate(model_weights.trainable)}
  arrays_by_name.update({f'non_trainable_{i}': np.asarray(w)
                         for i, w in enumerate(model_weights.non_trainable)})
  write_atomically(path, lambda f: np.savez(f, **arrays_by_name),
                    binary=True)


def _summary(history: list[dict[str, Any]], config: RunConfig,
             extra_summary: Optional[dict[str, Any]]) -> dict[str, Any]:
  final_eval = {k: v for k, v in history[-1].items() if k != 'round'}
  scalar_history = [dict(round=e['round'],
                         **{k: e.get(k) for k in SCALAR_EVAL_KEYS})
                    for e in history]
  return dict(final_eval, rounds=config.rounds, history=scalar_history,
              **(extra_summary or {}))


def _log_round(round_num: int, config: RunConfig, seconds: float,
               row: dict[str, Any], history: list[dict[str, Any]]) -> None:
  balanced = history[-1].get('balanced_accuracy') if history else None
  print(f'round {round_num}/{config.rounds}  {seconds:.2f}s  '
        f'train_loss {row["train_loss"]:.4f}  balanced_acc '
        f'{"-" if balanced is None else f"{balanced:.4f}"}', flush=True)


def run(process: tff.learning.templates.LearningProcess,
        data: federated.FederatedData,
        selector: Selector,
        evaluate: Callable[[Any], dict[str, Any]],
        config: RunConfig,
        extra_summary: Optional[dict[str, Any]] = None) -> dict[str, Any]:
  """Runs (or resumes) `config.rounds` rounds of `process`; returns the summary.

  Args:
    process: the algorithm's learning process.
    data: the clients' datasets.
    selector: chooses each round's client indices (see `selection`); its
      `needs_validation` says whether clients get validation data and slots.
    evaluate: maps the global `ModelWeights` to evaluation metrics, a
      JSON-able dict (it is saved in checkpoints).
    config: rounds, local training and output settings.
    extra_summary: JSON-able facts added to summary.json (data statistics,
      flags).

  Returns:
    The summary dict (also written to `summary.json` when there is an output
    directory): the final evaluation metrics at top level, plus `history`.

  Raises:
    errors.UserInputError: for an unusable output directory, or a `resume`
      without a matching checkpoint.
  """
  check_output_dir(config)
  progress = checkpointing.RunState(
      round_num=0, process_state=process.initialize(),
      selector_state=selector.get_state(), measurements=None, history=[])
  checkpoints = None
  if config.checkpoint_every or config.resume:
    checkpoints = checkpointing.CheckpointManager(config.checkpoint_dir)
  if config.resume:
    template = dataclasses.replace(
        progress, measurements=checkpointing.measurements_template(process))
    progress = _restore(checkpoints, template, config)
    selector.set_state(progress.selector_state)
  writer = None
  if config.output_dir is not None:
    writer = _MetricsWriter(config.output_dir,
                            progress if config.resume else None,
                            released_scalar_names(process))
  try:
    for round_num in range(progress.round_num + 1, config.rounds + 1):
      progress = _run_round(round_num, process, data, selector, evaluate,
                            config, progress, writer)
      if checkpoints is not None and config.checkpoint_every and (
          round_num % config.checkpoint_every == 0 or
          round_num == config.rounds):
        checkpoints.save(progress)
  finally:
    if writer is not None:
      writer.close()
  summary = _summary(progress.history, config, extra_summary)
  if hasattr(selector, 'summary'):
    summary['selection'] = selector.summary()
  released = _released_values(progress.measurements)
  if released:
    summary[RELEASED_KEY] = _released_summary(
        released, writer.rows if writer is not None else [])
  if config.output_dir is not None:
    write_atomically(
        os.path.join(config.output_dir, SUMMARY_FILE),
        lambda f: json.dump(summary, f, indent=2, allow_nan=False))
    _save_weights(os.path.join(config.output_dir, WEIGHTS_FILE),
                  process.get_model_weights(progress.process_state))
    plot.write_run_plots(config.output_dir)
  return summary


def _run_round(round_num: int,
               process: tff.learning.templates.LearningProcess,
               data: federated.FederatedData, selector: Selector,
               evaluate: Callable[[Any], dict[str, Any]], config: RunConfig,
               progress: checkpointing.RunState,
               writer: Optional[_MetricsWriter]) -> checkpointing.RunState:
  """One round: select, train, evaluate if due, release; the state after it."""
  client_indices = selector.select(round_num, progress.measurements)
  inputs = data.round_inputs(
      client_indices, round_num=round_num, local_epochs=config.local_epochs,
      batch_size=config.batch_size, seed=config.seed,
      with_validation=selector.needs_validation,
      with_client_index=wants_client_index(process),
      with_population=wants_population(process))
  start = time.monotonic()
  output = process.next(progress.process_state, inputs)
  seconds = time.monotonic() - start
  observe = getattr(selector, 'observe_round', None)
  if observe is not None:
    # Before the state is saved: what the selector learns from this round
    # (psi selection's improved clients) is part of its checkpointed state.
    observe(round_num, client_indices, output.metrics,
            process.get_model_weights(output.state))
  row = dict(round=round_num, round_seconds=round(seconds, 4),
             **_train_metrics(output.metrics),
             clients=' '.join(str(int(k)) for k in client_indices))
  row.update({name: value
              for name, value in _released_values(output.metrics).items()
              if not isinstance(value, list)})
  history = list(progress.history)
  evaluated = None
  if round_num % config.eval_every == 0 or round_num == config.rounds:
    evaluated = evaluate(process.get_model_weights(output.state))
    row.update({k: evaluated.get(k) for k in SCALAR_EVAL_KEYS})
    history.append(dict(evaluated, round=round_num))
  if writer is not None:
    writer.write(row, evaluated)
  if not config.quiet:
    _log_round(round_num, config, seconds, row, history)
  return checkpointing.RunState(
      round_num=round_num, process_state=output.state,
      selector_state=selector.get_state(), measurements=output.metrics,
      history=history)
