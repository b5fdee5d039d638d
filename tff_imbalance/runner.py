"""The one training loop shared by every task and algorithm.

Per round: the client selector picks a fixed number of client ids (a fixed
cohort size keeps TFF's worker from leaking one executor per distinct size)
from the previous round's measurements, the data gives their round inputs,
the runner calls the process's `next`, evaluates the global model on the
balanced test set every `eval_every` rounds, releases the round through
`report` (a row of `metrics.csv`, TensorBoard scalars) and, every
`checkpoint_every` rounds, saves a checkpoint (`checkpointing`): the process
state, the selector state, the round, its measurements and the evaluation
history as one TFF program state. A resumed run continues from the latest
checkpoint and redoes the rounds after it exactly as the uninterrupted run
would have: the same cohorts and the same weights.

At the end `report` writes `summary.json` and `final_weights.npz`, and `plot`
the figures. `run_each_client` trains one model per client on its own data
alone through the same loop (the "local" reference row). The runner knows
nothing about losses, algorithms or where the data came from: it sees a
`LearningProcess`, a `RoundData` (our `federated.FederatedData`, or a user's
TFF `ClientData` through `client_data.ClientDataPopulation`) and a selector.
"""

import dataclasses
import os
import tempfile
import time
from typing import Any, Callable, Optional, Protocol, Sequence

import numpy as np

from tff_imbalance import checkpointing
from tff_imbalance import compat
from tff_imbalance import errors
from tff_imbalance import evaluation
from tff_imbalance import plot
from tff_imbalance import report
from tff_imbalance.data import arrays
from tff_imbalance.data import federated
from tff_imbalance.models import spec as spec_lib

tff = compat.tff

# Names of `report`'s, kept here for callers written before it existed
# (tests, bench.speed); new code reads them from `report`.
SCALAR_EVAL_KEYS = report.SCALAR_EVAL_KEYS
METRICS_FILE = report.METRICS_FILE
WEIGHTS_FILE = report.WEIGHTS_FILE
RELEASED_KEY = report.RELEASED_KEY


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


class RoundData(Protocol):
  """What the round loop needs of the clients' data (see
  `federated.ClientPopulation`, which `FederatedData` and
  `client_data.ClientDataPopulation` are).

  Attributes:
    num_clients: the population's size N; clients are indexed 0..N-1.
  """
  num_clients: int

  def round_inputs(self, client_indices: Sequence[int], *, round_num: int,
                   local_epochs: int, batch_size: int, seed: int,
                   with_validation: bool, with_client_index: bool = False,
                   with_population: bool = False) -> list:
    """What `process.next` takes for the cohort, in cohort order."""


class PopulationData(RoundData, Protocol):
  """What `run_each_client` needs beyond `RoundData`.

  Attributes:
    client_ids: one id per client.
  """
  client_ids: Sequence[str]

  def only_client(self, client_index: int) -> RoundData:
    """The population reduced to client `client_index`, as client 0."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """How many rounds, how each client trains, and where results go.

  Attributes:
    rounds: number of federated rounds.
    local_epochs: passes over the local data per round.
    batch_size: local mini-batch size.
    eval_every: evaluate every this many rounds (and always after the last).
    seed: seeds local shuffling.
    eval_last: also evaluate every one of the last this many rounds (papers
      that report the mean over the last 10 rounds need each of them).
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
  eval_last: int = 0

  def __post_init__(self):
    for name in ('rounds', 'local_epochs', 'batch_size', 'eval_every'):
      if getattr(self, name) < 1:
        raise errors.UserInputError(
            f'--{name} must be >= 1 (got {getattr(self, name)}).')
    if self.eval_last < 0:
      raise errors.UserInputError(
          f'--eval_last must be >= 0 (got {self.eval_last}); 0 evaluates only '
          'every --eval_every rounds and after the last.')
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
    return os.path.join(self.output_dir, report.CHECKPOINT_DIR)


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
  evaluates every client; see `ClientPopulation.round_inputs`)."""
  return _client_data_has(process, federated.EVALUATION)


def _client_data_has(process: tff.learning.templates.LearningProcess,
                     field: str) -> bool:
  client_data_type = process.next.type_signature.parameter[1].member
  return isinstance(client_data_type, tff.StructType) and any(
      name == field
      for name, _ in tff.structure.iter_elements(client_data_type))


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


def _log_round(round_num: int, config: RunConfig, seconds: float,
               row: dict[str, Any], history: list[dict[str, Any]]) -> None:
  balanced = history[-1].get('balanced_accuracy') if history else None
  print(f'round {round_num}/{config.rounds}  {seconds:.2f}s  '
        f'train_loss {row["train_loss"]:.4f}  balanced_acc '
        f'{"-" if balanced is None else f"{balanced:.4f}"}', flush=True)


def run(process: tff.learning.templates.LearningProcess,
        data: RoundData,
        selector: Selector,
        evaluate: Callable[[Any], dict[str, Any]],
        config: RunConfig,
        extra_summary: Optional[dict[str, Any]] = None) -> dict[str, Any]:
  """Runs (or resumes) `config.rounds` rounds of `process`; returns the summary.

  Args:
    process: the algorithm's learning process.
    data: the clients' round inputs (`federated.FederatedData`, or a TFF
      `ClientData` adapted by `client_data.ClientDataPopulation`).
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
    writer = report.MetricsWriter(
        config.output_dir, report.released_scalar_names(process),
        resumed_round=progress.round_num if config.resume else None,
        history=progress.history)
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
  summary = report.run_summary(
      progress.history, config.rounds, extra_summary,
      selection=selector.summary() if hasattr(selector, 'summary') else None,
      last_released=report.released_values(progress.measurements),
      rows=writer.rows if writer is not None else ())
  if config.output_dir is not None:
    report.write_results(config.output_dir, summary,
                         process.get_model_weights(progress.process_state))
    plot.write_run_plots(config.output_dir)
  return summary


def round_inputs(process: tff.learning.templates.LearningProcess,
                 data: RoundData, selector: Selector,
                 client_indices: Sequence[int], *, round_num: int,
                 local_epochs: int, batch_size: int, seed: int) -> list:
  """What `process.next` takes for `client_indices` this round: their
  datasets, with the fields the process and the selector ask for
  (validation splits, client indices, the whole population)."""
  return data.round_inputs(
      client_indices, round_num=round_num, local_epochs=local_epochs,
      batch_size=batch_size, seed=seed,
      with_validation=selector.needs_validation,
      with_client_index=wants_client_index(process),
      with_population=wants_population(process))


def _run_round(round_num: int,
               process: tff.learning.templates.LearningProcess,
               data: RoundData, selector: Selector,
               evaluate: Callable[[Any], dict[str, Any]], config: RunConfig,
               progress: checkpointing.RunState,
               writer: Optional[report.MetricsWriter]
              ) -> checkpointing.RunState:
  """One round: select, train, evaluate if due, release; the state after it."""
  client_indices = selector.select(round_num, progress.measurements)
  inputs = round_inputs(process, data, selector, client_indices,
                        round_num=round_num, local_epochs=config.local_epochs,
                        batch_size=config.batch_size, seed=config.seed)
  start = time.monotonic()
  output = process.next(progress.process_state, inputs)
  seconds = time.monotonic() - start
  observe = getattr(selector, 'observe_round', None)
  if observe is not None:
    # Before the state is saved: what the selector learns from this round
    # (psi selection's improved clients) is part of its checkpointed state.
    observe(round_num, client_indices, output.metrics,
            process.get_model_weights(output.state))
  history = list(progress.history)
  evaluated = None
  if (round_num % config.eval_every == 0 or
      round_num > config.rounds - max(config.eval_last, 1)):
    evaluated = evaluate(process.get_model_weights(output.state))
    history.append(dict(evaluated, round=round_num))
  row = report.round_row(round_num, seconds, output.metrics, client_indices,
                         evaluated)
  if writer is not None:
    writer.write(row, evaluated)
  if not config.quiet:
    _log_round(round_num, config, seconds, row, history)
  return checkpointing.RunState(
      round_num=round_num, process_state=output.state,
      selector_state=selector.get_state(), measurements=output.metrics,
      history=history)


class _SoleClientSelector:
  """Selects client 0, the one client of `PopulationData.only_client`.

  Its state is empty, as `selection.UniformSelector`'s, so checkpoints of
  earlier each-client-alone runs still resume.
  """

  needs_validation = False

  def select(self, round_num: int, measurements: Any = None) -> np.ndarray:
    del round_num, measurements  # One client, every round.
    return np.zeros([1], np.int64)

  def get_state(self) -> dict[str, Any]:
    return {}

  def set_state(self, state: dict[str, Any]) -> None:
    del state


def _client_config(config: RunConfig, client: int) -> RunConfig:
  """Client `client`'s run settings: its own directory under the run's."""
  if config.output_dir is None:
    return config
  client_config = dataclasses.replace(
      config, output_dir=report.client_run_dir(config.output_dir, client),
      quiet=True)
  # A resumed experiment resumes the clients it had reached; the ones it had
  # not started start afresh.
  return dataclasses.replace(
      client_config, resume=config.resume and bool(
          checkpointing.saved_rounds(client_config.checkpoint_dir)))


def run_each_client(process: tff.learning.templates.LearningProcess,
                    data: PopulationData,
                    evaluate: Callable[[Any], dict[str, Any]],
                    config: RunConfig,
                    extra_summary: Optional[dict[str, Any]] = None
                   ) -> dict[str, Any]:
  """Trains one model per client on its data alone; summarises over clients.

  The reference row "local" of 003's tables: what a client reaches with its
  own data only. Client k runs `process` (a one-client process such as
  `centralized.build_centralized`'s) on its own training split through `run`,
  for the same rounds and local epochs as a federated run; its final model is
  evaluated on the balanced test set, and every metric is reported as its
  mean and spread over the clients (`report.summarize_clients`).

  With an output directory each client's run writes the usual outputs under
  `clients/<k>/`, and the top level `summary.json` and `local_clients.csv`
  (`report.write_client_results`).

  Args:
    process: a one-client process; its `initialize` gives every client the
      same starting model.
    data: the clients' data.
    evaluate: maps `ModelWeights` to evaluation metrics.
    config: rounds, local training and output settings of every client.
    extra_summary: JSON-able facts added to the top-level summary.

  Returns:
    The summary over clients (see `report.summarize_clients`), with each
    client's final metrics under `local_clients`.
  """
  finals = []
  for k in range(data.num_clients):
    client_summary = run(process, data.only_client(k), _SoleClientSelector(),
                         evaluate, _client_config(config, k))
    final = {key: client_summary.get(key)
             for key in report.SCALAR_EVAL_KEYS + ('per_class_accuracy',)}
    finals.append(dict(client=k, client_id=data.client_ids[k], **final))
    if not config.quiet:
      print(f'client {k + 1}/{data.num_clients} ({data.client_ids[k]}): '
            f'balanced_acc {final["balanced_accuracy"]:.4f}', flush=True)
  summary = dict(report.summarize_clients(finals), rounds=config.rounds,
                 num_local_clients=len(finals), local_clients=finals,
                 **(extra_summary or {}))
  if config.output_dir is not None:
    report.write_client_results(config.output_dir, summary, finals)
  return summary
