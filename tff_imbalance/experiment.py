"""Build and run an experiment from plain Python arguments (no absl).

One call trains a registered method (`learning.registry`, the `--algo`
names) on the user's model and client data and evaluates it on a test set:

  summary = experiment.run_experiment(
      'redgrape', build_my_keras_model, my_client_data, (x_test, y_test),
      rounds=50, clients_per_round=10, local_epochs=1, batch_size=32, seed=0,
      output_dir='runs/mine')

* the model is a `ModelSpec` or a no-argument Keras model factory whose last
  layer is a `Dense` without activation named `classifier` (or pass
  `classifier_layer=NAME`; `spec.ModelSpec.from_keras`);
* the training data is a `tff.simulation.datasets.ClientData` of `(x, y)` or
  `{'x', 'y'}` examples with integer labels (`client_data.
  ClientDataPopulation`), a dict `{client_id: (x, y)}` of numpy arrays, or a
  `federated.ClientPopulation` (our `FederatedData`) used as it is;
* the test set is `(x, y)` arrays (or `arrays.LabeledArrays`).

`prepare` does everything but the rounds and returns an `Experiment` whose
`run` trains (the task entry points record their flags in between);
`run_experiment` is both. The same seed gives bit-identical weights.
"""

import dataclasses
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from tff_imbalance import compat
from tff_imbalance import errors
from tff_imbalance import runner
from tff_imbalance.data import arrays
from tff_imbalance.data import client_data as client_data_lib
from tff_imbalance.data import federated
from tff_imbalance.data import stats
from tff_imbalance.learning import method
from tff_imbalance.learning import registry
from tff_imbalance.learning import selection
from tff_imbalance.models import builders
from tff_imbalance.models import spec as spec_lib

tff = compat.tff

# The clients' training data `prepare` accepts (see the module docstring).
TrainData = Union[federated.ClientPopulation,
                  tff.simulation.datasets.ClientData,
                  Mapping[str, tuple[np.ndarray, np.ndarray]]]
# Labeled examples: `(x, y)` arrays or `arrays.LabeledArrays`.
Examples = Union[arrays.LabeledArrays, tuple[np.ndarray, np.ndarray]]
# A registered method's name, or a process built elsewhere (TFF's own).
Algorithm = Union[str, tff.learning.templates.LearningProcess]
# The summary's `algo` of a process built elsewhere.
OWN_PROCESS = 'own_process'

# The validation share of the methods that use one, unless given.
DEFAULT_VALIDATION_FRACTION = 0.1


@dataclasses.dataclass(frozen=True)
class Experiment:
  """A method built on its data, ready to run (see `prepare`).

  Attributes:
    algo: the method's registry name.
    model_spec: the model.
    process: the method's learning process.
    data: the clients' round inputs.
    selector: chooses each round's clients.
    evaluate: the balanced-test-set evaluation of a global model.
    run_config: rounds, local training and output settings.
    client_mode: how the method runs its clients.
    train_class_counts: [C] training examples per class over all clients.
    summary_facts: what summary.json records about the setup.
  """
  algo: str
  model_spec: spec_lib.ModelSpec
  process: tff.learning.templates.LearningProcess
  data: runner.RoundData
  selector: runner.Selector
  evaluate: runner.Evaluator
  run_config: runner.RunConfig
  client_mode: method.ClientMode
  train_class_counts: np.ndarray
  summary_facts: dict[str, Any]

  def run(self, extra_summary: Optional[dict[str, Any]] = None
         ) -> dict[str, Any]:
    """Runs (or resumes) the rounds; returns the summary (`runner.run`).

    Args:
      extra_summary: JSON-able facts added to summary.json after the setup's.
    """
    facts = dict(self.summary_facts, **(extra_summary or {}))
    if self.client_mode == method.ClientMode.EACH_ALONE:
      return runner.run_each_client(self.process, self.data, self.evaluate,
                                    self.run_config, extra_summary=facts)
    return runner.run(self.process, self.data, self.selector, self.evaluate,
                      self.run_config, extra_summary=facts)


def _labeled(examples: Examples, what: str) -> arrays.LabeledArrays:
  """`(x, y)` as float32 / int64 `LabeledArrays`, checked."""
  if isinstance(examples, arrays.LabeledArrays):
    x, y = examples.x, examples.y
  elif isinstance(examples, Sequence) and len(examples) == 2:
    x, y = examples
  else:
    raise errors.UserInputError(
        f'{what} must be (x, y) numpy arrays (got {type(examples).__name__}).')
  x, y = np.asarray(x), np.asarray(y)
  if len(x) != len(y):
    raise errors.UserInputError(
        f'{what}: x and y differ in length ({len(x)} vs {len(y)}).')
  return arrays.LabeledArrays(x=x.astype(np.float32, copy=False),
                              y=stats.validate_labels(y))


def validation_fraction_for(algo: str, options: Any,
                            validation_fraction: Optional[float]) -> float:
  """The per-client validation share: carved only where the method uses it.

  Args:
    algo: the method's registry name.
    options: its options (None: defaults).
    validation_fraction: the share asked for; None takes
      `DEFAULT_VALIDATION_FRACTION` where the method uses validation.

  Returns:
    0.0 for a method without validation, else the share.

  Raises:
    errors.UserInputError: for a share outside [0, 1), or a zero share where
      psi selection needs validation losses.
  """
  if validation_fraction is not None and not 0 <= validation_fraction < 1:
    raise errors.UserInputError(
        f'validation_fraction (--validation_fraction) must be in [0, 1), e.g. '
        f'0.1 (got {validation_fraction}).')
  if not registry.uses_validation(algo, options):
    return 0.0
  if validation_fraction is None:
    return DEFAULT_VALIDATION_FRACTION
  if validation_fraction == 0:
    raise errors.UserInputError(
        f'validation_fraction=0 (--validation_fraction=0) leaves '
        f'algo={algo!r} no validation data for psi selection; pass a share in '
        '(0, 1) '
        f'(default {DEFAULT_VALIDATION_FRACTION}) or options with psi=0 '
        '(--psi=0) for uniform sampling.')
  return validation_fraction


def _population(train: TrainData, num_classes: int, *,
                validation_fraction: float,
                seed: int) -> federated.ClientPopulation:
  """The clients' data as a `ClientPopulation` (see `TrainData`)."""
  if isinstance(train, federated.ClientPopulation):
    return train  # Split already, by whoever built it.
  if isinstance(train, tff.simulation.datasets.ClientData):
    return client_data_lib.ClientDataPopulation(
        train, validation_fraction=validation_fraction, seed=seed)
  if isinstance(train, Mapping) and train:
    client_ids = list(train)
    clients = [_labeled(train[k], f'train[{k!r}]') for k in client_ids]
    return _federated_data(clients, client_ids, num_classes,
                           validation_fraction=validation_fraction, seed=seed)
  raise errors.UserInputError(
      f'train must be a tff.simulation.datasets.ClientData, a non-empty dict '
      f'{{client_id: (x, y)}} or a federated.ClientPopulation (got '
      f'{type(train).__name__}).')


def _consecutive_ranges(lengths: Sequence[int]) -> list[np.ndarray]:
  """Positions of consecutive parts of the given lengths in their
  concatenation."""
  ends = np.cumsum([0] + list(lengths))
  return [np.arange(a, b) for a, b in zip(ends[:-1], ends[1:])]


def _concatenated(parts: Sequence[arrays.LabeledArrays]
                 ) -> tuple[arrays.LabeledArrays, list[np.ndarray]]:
  """The parts as one pool, and each part's positions in it."""
  pool = arrays.LabeledArrays(x=np.concatenate([p.x for p in parts]),
                              y=np.concatenate([p.y for p in parts]))
  return pool, _consecutive_ranges([len(p) for p in parts])


def _federated_data(clients: Sequence[arrays.LabeledArrays],
                    client_ids: Sequence[str], num_classes: int, *,
                    validation_fraction: float,
                    seed: int) -> federated.FederatedData:
  """Per-client arrays as one pool with index partitions."""
  pool, partition = _concatenated(clients)
  return federated.build_federated_data(
      pool, partition, num_classes, validation_fraction=validation_fraction,
      seed=seed, client_ids=[str(k) for k in client_ids])


def _materialized(data: federated.ClientPopulation,
                  num_classes: int) -> federated.FederatedData:
  """Any population as a `FederatedData` (to pool its clients), read once."""
  if isinstance(data, federated.FederatedData):
    return data
  client_ids = list(getattr(data, 'client_ids',
                            [str(k) for k in range(data.num_clients)]))
  train = [data.train_examples(k) for k in range(data.num_clients)]
  validation = [data.validation_examples(k) for k in range(data.num_clients)]
  pool, ranges = _concatenated(train + validation)
  return federated.FederatedData(
      pool=pool, client_ids=tuple(client_ids),
      train_indices=tuple(ranges[:len(train)]),
      validation_indices=tuple(ranges[len(train):]),
      num_classes=num_classes)


def _train_labels(data: federated.ClientPopulation
                 ) -> tuple[np.ndarray, list[np.ndarray]]:
  """Every client's training labels, concatenated, and each one's positions."""
  if isinstance(data, federated.FederatedData):
    return data.train_labels(), data.client_train_partition()
  per_client = [data.train_examples(k).y for k in range(data.num_clients)]
  return (np.concatenate(per_client).astype(np.int64),
          _consecutive_ranges([len(y) for y in per_client]))


def _algorithm_config(config: Optional[method.AlgorithmConfig],
                      **shared: Optional[int]) -> method.AlgorithmConfig:
  """`config` (default: the defaults) with the given shared settings."""
  config = config or method.AlgorithmConfig()
  given = {name: value for name, value in shared.items() if value is not None}
  return dataclasses.replace(config, **given)


def prepare(algo: Algorithm,
            model: spec_lib.ModelOrFactory,
            train: TrainData,
            test: Examples,
            *,
            rounds: int,
            clients_per_round: Optional[int] = None,
            local_epochs: Optional[int] = None,
            batch_size: Optional[int] = None,
            seed: int = 0,
            config: Optional[method.AlgorithmConfig] = None,
            options: Any = None,
            aux_data: Optional[Examples] = None,
            validation_fraction: Optional[float] = None,
            classifier_layer: str = builders.CLASSIFIER_LAYER,
            minority_classes: Optional[Sequence[int]] = None,
            eval_every: int = 1,
            eval_last: int = 0,
            output_dir: Optional[str] = None,
            checkpoint_every: int = 0,
            resume: bool = False,
            quiet: bool = True) -> Experiment:
  """Builds method `algo` on the data, ready to `run`.

  Args:
    algo: a registered method (`registry.algorithm_names()`), e.g.
      'fedavg', 'fedfocal', 'ratio', 'redgrape'; or a `LearningProcess`
      built elsewhere (e.g. `tff.learning.algorithms.build_weighted_fed_avg(
      spec.tff_model_fn(), ...)`) over batches `OrderedDict(x=float32,
      y=int64)`, run with uniform selection; `config`, `options` and
      `aux_data` do not apply to it.
    model: a `ModelSpec`, or a no-argument Keras model factory (see
      `spec.ModelSpec.from_keras`); its number of outputs is the number of
      classes C.
    train: the clients' training data (see `TrainData`).
    test: the balanced test set, `(x, y)`.
    rounds: the number of rounds.
    clients_per_round: the fixed cohort size K (None: `config`'s, 10).
    local_epochs: the clients' local epochs (None: `config`'s, 1).
    batch_size: the clients' batch size (None: `config`'s, 32).
    seed: seeds client selection, local shuffling, validation splits and the
      methods' own draws (a factory's model is seeded by the factory).
    config: the shared hyperparameters (learning rates, loss, monitor);
      None takes `method.AlgorithmConfig()`.
    options: the method's options (`registry.get(algo).options_class`, e.g.
      `fedfocal.FedFocalOptions(psi=0.5)`); None takes its defaults.
    aux_data: `(x, y)` examples of every class the server holds (held out of
      every client), for algo='ratio' and `config.monitor`.
    validation_fraction: each client's share held out for validation, for
      the methods that use one (Fed-Focal's psi selection; default 0.1);
      ignored where `train` is a `ClientPopulation` (split already).
    classifier_layer: for a factory, the name of its last `Dense` layer.
    minority_classes: the classes of the minority-class accuracy.
    eval_every: evaluate every this many rounds (and after the last).
    eval_last: also evaluate each of the last this many rounds.
    output_dir: where metrics, checkpoints, summary and plots go (None:
      nowhere).
    checkpoint_every: save a checkpoint every this many rounds; 0 never.
    resume: continue from the latest checkpoint in `output_dir`.
    quiet: no per-round log lines.

  Returns:
    An `Experiment`.

  Raises:
    errors.UserInputError: for an unusable argument, naming it.
  """
  own_process = isinstance(algo, tff.learning.templates.LearningProcess)
  if own_process and not (config is None and options is None and
                          aux_data is None):
    raise errors.UserInputError(
        'config, options and aux_data configure a registered method: pass '
        'algo by name, or leave them out with a process built elsewhere.')
  if not own_process:
    registry.get(algo)  # An unknown name stops here, before any work.
  name = OWN_PROCESS if own_process else algo
  config = _algorithm_config(config, clients_per_round=clients_per_round,
                             local_epochs=local_epochs, batch_size=batch_size)
  run_config = runner.RunConfig(
      rounds=rounds, local_epochs=config.local_epochs,
      batch_size=config.batch_size, eval_every=eval_every, eval_last=eval_last,
      seed=seed, output_dir=output_dir, quiet=quiet, checkpoint_every=checkpoint_every,
      resume=resume)
  model_spec = spec_lib.as_model_spec(model, classifier_layer=classifier_layer,
                                      seed=seed)
  num_classes = model_spec.num_classes
  test = _labeled(test, 'test')
  stats.validate_labels(test.y, num_classes)
  data = _population(
      train, num_classes, seed=seed, validation_fraction=(
          validation_fraction or 0.0 if own_process else
          validation_fraction_for(algo, options, validation_fraction)))
  train_labels, client_partition = _train_labels(data)
  train_counts = stats.class_counts(train_labels, num_classes)
  client_mode = (method.ClientMode.FEDERATED if own_process else
                 registry.client_mode(algo))
  if client_mode == method.ClientMode.POOLED:
    data = _materialized(data, num_classes).pooled()
  cohort_size = config.clients_per_round
  if client_mode != method.ClientMode.FEDERATED:
    cohort_size = 1  # One model trained on one (virtual) client's data.
  if own_process:
    process = algo
    selector = selection.UniformSelector(data.num_clients, cohort_size, seed)
  else:
    context = method.TaskContext(
        num_classes=num_classes, num_clients=data.num_clients,
        train_class_counts=train_counts,
        aux_data=None if aux_data is None else _labeled(aux_data, 'aux_data'),
        client_sizes=np.array([len(part) for part in client_partition]))
    process, selector = _method_process(algo, model_spec, config, context,
                                        options, data, cohort_size, seed)
  return Experiment(
      algo=name, model_spec=model_spec, process=process, data=data,
      selector=selector,
      evaluate=runner.Evaluator(model_spec, test, train_counts,
                                minority_classes=minority_classes),
      run_config=run_config, client_mode=client_mode,
      train_class_counts=train_counts,
      summary_facts=dict(
          algo=name, model=model_spec.name, seed=seed,
          train_class_counts=train_counts.tolist(),
          partition=stats.summarize(train_labels, client_partition,
                                    num_classes)))


def _method_process(algo: str, model_spec: spec_lib.ModelSpec,
                    config: method.AlgorithmConfig,
                    context: method.TaskContext, options: Any,
                    data: federated.ClientPopulation, cohort_size: int,
                    seed: int):
  """The registered method's selector and process (the selector first, as
  the tasks always built them)."""
  selector = registry.build_selector(algo, config, data, cohort_size, seed,
                                     model_spec=model_spec, options=options)
  process = registry.build_process(algo, model_spec, config, context, options)
  return process, selector


def run_experiment(algo: Algorithm, model: spec_lib.ModelOrFactory,
                   train: TrainData, test: Examples, *, rounds: int,
                   extra_summary: Optional[dict[str, Any]] = None,
                   **settings) -> dict[str, Any]:
  """`prepare(algo, model, train, test, rounds=..., **settings).run()`.

  Args:
    algo: the method (see `prepare`).
    model: the model (see `prepare`).
    train: the clients' training data (see `prepare`).
    test: the test set (see `prepare`).
    rounds: the number of rounds.
    extra_summary: JSON-able facts added to summary.json.
    **settings: the other keyword arguments of `prepare`.

  Returns:
    The run summary: the final evaluation metrics at top level (accuracy,
    balanced_accuracy, per_class_accuracy, ...), plus `history`.
  """
  return prepare(algo, model, train, test, rounds=rounds,
                 **settings).run(extra_summary)
