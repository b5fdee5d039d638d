"""`--algo` name -> `method.Method`, one entry per method.

Each method's file (`learning/algorithms/<method>.py`) declares its
`method.Method`: its builder, its options dataclass (from which the task
generates its flags), how the task runs its clients and its selector. Adding
a method is its file and one line in `ALGORITHMS` (or, from outside the
package, `register`; docs/ARCHITECTURE.md); adding a hyperparameter is
one field in its options. Hyperparameters every method shares are
`AlgorithmConfig`'s. The runner and the tasks know nothing else about
methods.
"""

import collections
from typing import Any, Iterator, Optional, Sequence

from tff_imbalance import compat
from tff_imbalance import errors
from tff_imbalance.learning import method
from tff_imbalance.learning import mfe
from tff_imbalance.learning import monitor as monitor_lib
from tff_imbalance.learning import options as options_lib
from tff_imbalance.learning import selection
from tff_imbalance.learning.algorithms import balanced_softmax
from tff_imbalance.learning.algorithms import balancefl
from tff_imbalance.learning.algorithms import centralized
from tff_imbalance.learning.algorithms import climb
from tff_imbalance.learning.algorithms import creff
from tff_imbalance.learning.algorithms import fedavg_family
from tff_imbalance.learning.algorithms import fedfocal
from tff_imbalance.learning.algorithms import ratio
from tff_imbalance.learning.algorithms import redgrape
from tff_imbalance.learning.algorithms import virtual
from tff_imbalance.models import spec as spec_lib

tff = compat.tff

# The shared pieces, under the names their callers have always used.
AlgorithmConfig = method.AlgorithmConfig
TaskContext = method.TaskContext
ClientMode = method.ClientMode
LOSSES = method.LOSSES
MINORITY_SOURCES = mfe.MINORITY_SOURCES
DEFAULT_MINORITY_SHARE = mfe.DEFAULT_MINORITY_SHARE

ALGORITHMS: dict[str, method.Method] = {m.name: m for m in (
    fedavg_family.FEDAVG,
    fedavg_family.FEDAVGM,
    fedavg_family.FEDADAM,
    fedavg_family.FEDPROX,
    fedfocal.FEDFOCAL,
    ratio.RATIO,
    climb.CLIMB,
    balanced_softmax.BALANCED_SOFTMAX,
    centralized.CENTRALIZED,
    centralized.LOCAL,
    balancefl.BALANCEFL,
    redgrape.REDGRAPE,
    creff.CREFF,
    virtual.VIRTUAL,
)}


def _names(predicate) -> frozenset[str]:
  return frozenset(name for name, m in ALGORITHMS.items() if predicate(m))


# Views of the entries for callers written before them (bench/, tests):
# read `ALGORITHMS[name]` in new code.
PSI_SELECTION_ALGORITHMS = _names(lambda m: m.make_selector is not None)
MONITORED_ALGORITHMS = _names(lambda m: m.runs_monitor)
POOLED_DATA_ALGORITHMS = _names(
    lambda m: m.client_mode == ClientMode.POOLED)
LOCAL_ONLY_ALGORITHMS = _names(
    lambda m: m.client_mode == ClientMode.EACH_ALONE)


def algorithm_names() -> tuple[str, ...]:
  return tuple(sorted(ALGORITHMS))


def register(entry: method.Method) -> None:
  """Adds a method declared outside this package (a user's own file).

  Call it before the task program is imported: the tasks make `--algo`'s
  choices and the option flags at import. The views above
  (`PSI_SELECTION_ALGORITHMS` etc.) list the built-in methods only.

  Raises:
    ValueError: if a method of that name is registered already.
  """
  if entry.name in ALGORITHMS:
    raise ValueError(f'a method named {entry.name!r} is registered already.')
  ALGORITHMS[entry.name] = entry


def get(name: str) -> method.Method:
  """The registered method `name`.

  Raises:
    errors.UserInputError: for an unknown name.
  """
  if name not in ALGORITHMS:
    raise errors.UserInputError(
        f'--algo must be one of {", ".join(algorithm_names())} '
        f'(got algo={name!r}).')
  return ALGORITHMS[name]


def options_classes() -> Iterator[tuple[str, type]]:
  """(method name, options class) of every method with options."""
  for name, m in sorted(ALGORITHMS.items()):
    if m.options_class is not None:
      yield name, m.options_class


def make_options(name: str, **flag_values) -> Any:
  """The options of method `name` from values keyed by their flag names.

  E.g. `make_options('climb', climb_epsilon=0.1)`, or `make_options('fedfocal',
  psi=0.5)`: the spelling of the command line, from Python.

  Raises:
    TypeError: for a name that is not one of the method's flags.
    errors.UserInputError: for an invalid value (naming the flag).
  """
  entry = get(name)
  fields = dict(options_lib.flag_fields(entry.options_class)
                if entry.options_class is not None else ())
  unknown = sorted(set(flag_values) - set(fields))
  if unknown:
    raise TypeError(f'--algo={name} has no option flags {unknown}; its '
                    f'flags: {sorted(fields)}')
  if entry.options_class is None:
    return None
  return entry.options_class(**{fields[flag].name: value
                                for flag, value in flag_values.items()})


def _options_or_default(entry: method.Method, options: Any) -> Any:
  if options is None:
    return entry.default_options()
  if not isinstance(options, entry.options_class or type(None)):
    raise TypeError(f'--algo={entry.name} takes '
                    f'{getattr(entry.options_class, "__name__", "no")} '
                    f'options, got {type(options).__name__}')
  return options


def client_mode(name: str) -> method.ClientMode:
  """How the task runs the clients of method `name`."""
  return get(name).client_mode


def uses_validation(name: str, options: Any = None) -> bool:
  """Whether `name` reads per-client validation splits (Fed-Focal's psi
  selection with psi > 0). Only such methods carve a split out of the
  clients' data."""
  entry = get(name)
  return entry.uses_validation(_options_or_default(entry, options))


def build_selector(name: str, config: AlgorithmConfig, data,
                   clients_per_round: int, seed: int, model_spec=None,
                   options: Any = None):
  """The client selector of method `name` over `data` (a `FederatedData`):
  the method's own (psi selection), uniform otherwise."""
  entry = get(name)
  if entry.make_selector is None:
    return selection.UniformSelector(data.num_clients, clients_per_round, seed)
  return entry.make_selector(_options_or_default(entry, options), config,
                             data, clients_per_round, seed, model_spec)


def build_process(name: str, model_spec: spec_lib.ModelOrFactory,
                  config: AlgorithmConfig, context: TaskContext,
                  options: Any = None
                 ) -> tff.learning.templates.LearningProcess:
  """Builds the named method's learning process.

  Args:
    name: the `--algo`.
    model_spec: the model: a `ModelSpec`, or a no-argument Keras model
      factory (`spec_lib.as_model_spec`; seed 0 for the methods' own draws).
    config: the shared hyperparameters.
    context: what the task knows about its data.
    options: the method's options (`ALGORITHMS[name].options_class`);
      None takes their defaults.

  Raises:
    errors.UserInputError: for an unknown name, --monitor (or MFE-G) without
      auxiliary data, or --loss=mfe|msfe with a method that cannot take it.
  """
  entry = get(name)
  model_spec = spec_lib.as_model_spec(model_spec)
  if config.uses_minority and not entry.minority_losses:
    raise errors.UserInputError(
        f'--loss={config.loss} needs minority classes in the local loop, '
        f'which --algo={name} does not carry: use --algo='
        f'{",".join(sorted(_names(lambda m: m.minority_losses)))}.')
  watch = config.monitor and not (entry.runs_monitor or
                                  config.loss_runs_monitor)
  if watch:
    monitor_lib.check_aux_data(context.aux_data, 'monitor=True (--monitor)')
  process = entry.build(model_spec, config,
                        _options_or_default(entry, options), context)
  if watch:
    process = ratio.build_monitored(
        process, model_spec, config.client_optimizer(), context.aux_data,
        local_epochs=config.local_epochs, batch_size=config.batch_size,
        threshold=config.ratio_threshold)
  return process


_FEDERATED_ONLY = 'federated algorithms (not --algo=centralized or local)'
_CLIENT_OPTIMIZER = ('methods whose clients run SGD on the weights (not '
                     '--algo=virtual: --virtual_natural_lr)')


def _shared_flag_scopes(name: str, config: AlgorithmConfig, options: Any):
  """{shared flag: (whether it applies to `name`, where it applies)}."""
  entry = get(name)
  flagged = sorted(_names(lambda m: m.local_loss == method.LocalLoss.FLAGGED))
  focal = sorted(_names(lambda m: m.local_loss == method.LocalLoss.FOCAL))
  reads_focal = entry.local_loss == method.LocalLoss.FOCAL or (
      entry.local_loss == method.LocalLoss.FLAGGED and config.loss == 'focal')
  focal_where = ' or '.join([f'--algo={n}' for n in focal] + ['--loss=focal'])
  federated = entry.client_mode == ClientMode.FEDERATED
  return {
      'loss': (entry.local_loss == method.LocalLoss.FLAGGED,
               f'--algo={",".join(flagged)}'),
      'focal_gamma': (reads_focal, focal_where),
      'focal_alpha': (reads_focal, focal_where),
      'validation_fraction': (
          entry.uses_validation(options),
          '--algo=fedfocal or virtual with --psi > 0; no validation split '
          'is carved'),
      'ratio_threshold': (
          entry.runs_monitor or config.monitor or config.loss_runs_monitor,
          '--algo=ratio, --monitor or --mfe_minority=global'),
      'mfe_minority': (config.uses_minority, '--loss=mfe or msfe'),
      'mfe_minority_share': (config.uses_minority, '--loss=mfe or msfe'),
      'server_lr': (federated, _FEDERATED_ONLY),
      'client_lr': (entry.uses_client_optimizer, _CLIENT_OPTIMIZER),
      'client_momentum': (entry.uses_client_optimizer, _CLIENT_OPTIMIZER),
      'clients_per_round': (federated, _FEDERATED_ONLY),
  }


def inapplicable_flags(name: str, config: AlgorithmConfig, options: Any,
                       flag_names: Sequence[str]) -> list[tuple[str, str]]:
  """The flags among `flag_names` that method `name` ignores.

  A method's option flags apply to it alone (some only with others of its
  settings, `options.option(applies_if=...)`); a few shared flags apply to
  some methods (`_shared_flag_scopes`); the rest to every method.

  Args:
    name: the `--algo`.
    config: the shared hyperparameters (some flags apply only with others).
    options: the method's options (None: its defaults).
    flag_names: the flags the user set.

  Returns:
    (flag, where it applies) pairs, in the order of `flag_names`.
  """
  entry = get(name)
  options = _options_or_default(entry, options)
  scopes = _shared_flag_scopes(name, config, options)
  owners = collections.defaultdict(list)  # A flag may serve two methods.
  for other, options_class in options_classes():
    for flag in options_lib.flag_names(options_class):
      owners[flag].append(other)
  for flag, methods in owners.items():
    scopes[flag] = (name in methods,
                    ' or '.join(f'--algo={other}' for other in methods))
  if options is not None:
    for flag, where in options_lib.moot_flags(options):
      scopes[flag] = (False, where)
  return [(flag, scopes[flag][1]) for flag in flag_names
          if flag in scopes and not scopes[flag][0]]
