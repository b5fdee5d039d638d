"""Flags and wiring shared by every task: algorithm, model, rounds, output.

A task module defines its data flags, turns them into a `SourceData` and a
client partition, and calls `run_experiment`; everything after the partition
is the same for every task.

An --output_dir belongs to one experiment: `flags.txt` there records every
flag (`python -m <task> --flagfile=DIR/flags.txt` reruns it), and a later
run in the same directory must use the same flags but for --rounds, --resume,
--quiet, --output_dir, --checkpoint_every, --max_concurrent_clients,
--workers, --executor and --device.
--resume continues the run from its latest checkpoint.
"""

import collections
import dataclasses
import functools
import os
import sys
from typing import Callable, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np

from tff_imbalance import checkpointing
from tff_imbalance import compat  # pylint: disable=unused-import  (TF logging)
from tff_imbalance import errors
from tff_imbalance import evaluation
from tff_imbalance import experiment
from tff_imbalance import report
from tff_imbalance import runner
from tff_imbalance import inprocess
from tff_imbalance import runtime
from tff_imbalance.data import arrays
from tff_imbalance.data import auxiliary
from tff_imbalance.data import federated
from tff_imbalance.data import partition
from tff_imbalance.data import stats
from tff_imbalance.learning import options as options_lib
from tff_imbalance.learning import registry
from tff_imbalance.models import builders
from tff_imbalance.models import spec as spec_lib

FLAGS = flags.FLAGS

# Flags that may differ between a run and its resumption or rerun in the same
# --output_dir: they extend a run or change how it is watched and stored, not
# what it computes (the worker's concurrency does not change the results;
# remote workers change only the order of float sums, tests/test_remote.py;
# the in-process path agrees with the worker to 1e-5, tests/test_inprocess.py).
_FLAGS_FREE_IN_ONE_RUN = frozenset({
    'rounds', 'resume', 'quiet', 'output_dir', 'checkpoint_every',
    'max_concurrent_clients', 'workers', 'executor', 'device'})
# Modules whose flags are infrastructure (logging, test runners), not ours.
_FOREIGN_FLAG_MODULES = ('absl.', 'tensorflow.', 'tensorflow_federated.')
FLAGS_FILE = 'flags.txt'
_TASK_LINE_PREFIX = '# python -m '
# The console scripts of pyproject.toml: `tff-imbalance-<task>`, dashed.
CONSOLE_SCRIPT_PREFIX = 'tff-imbalance-'

flags.DEFINE_enum('algo', 'fedavg', registry.algorithm_names(),
                  'Federated algorithm.')
flags.DEFINE_enum('model', 'cnn', sorted(builders.MODEL_BUILDERS),
                  'Model: cnn (McMahan et al.), cnn_dropout (Reddi et al.), '
                  'mlp.')
flags.DEFINE_integer('rounds', 20, 'Federated rounds.')
flags.DEFINE_integer('clients_per_round', 10,
                     'Clients sampled per round (fixed cohort size).')
flags.DEFINE_integer('local_epochs', 1, 'Local epochs per round.')
flags.DEFINE_integer('batch_size', 32, 'Local batch size.')
flags.DEFINE_float('client_lr', 0.05, 'Local SGD learning rate.')
flags.DEFINE_float('client_momentum', 0.0, 'Local SGD momentum.')
flags.DEFINE_float('server_lr', None,
                   'Server learning rate (default: 1.0 for SGD servers, 0.01 '
                   'for fedadam).')
flags.DEFINE_enum('loss', 'ce', list(registry.LOSSES),
                  'Local loss: cross-entropy, focal (000 eq. 6; fedfocal '
                  'always uses focal), mse (squared error of the softmax '
                  'outputs), mfe or msfe (mean (squared) false error, Wang '
                  'et al. 2016: fedavg, fedavgm, fedadam, fedprox).')
flags.DEFINE_enum('mfe_minority', 'local', list(registry.MINORITY_SOURCES),
                  'MFE/MSFE minority classes: local (each client\'s own '
                  'label counts, 002\'s MFE-L) or global (the composition '
                  'monitor\'s estimate, broadcast each round: MFE-G).')
flags.DEFINE_float('mfe_minority_share', registry.DEFAULT_MINORITY_SHARE,
                   'A class is a minority class when its share is below '
                   'this fraction of a balanced class\'s share 1/C.')
flags.DEFINE_float('focal_gamma', 2.0, 'Focal loss gamma (>= 0).')
flags.DEFINE_list('focal_alpha', ['1.0'],
                  'Focal loss alpha: one weight, or one per class.')
flags.DEFINE_float('validation_fraction', None,
                   'Share of each client\'s examples (per class) held out for '
                   'local validation, in [0, 1); default: 0.1 for the '
                   'algorithms that use one (fedfocal with --psi > 0), none '
                   'for the others, which ignore the flag.')
flags.DEFINE_list('minority_classes', None,
                  'Classes averaged into minority_accuracy (Ac.M); default: '
                  'the 30% of classes with the fewest training examples.')
flags.DEFINE_integer('seed', 0, 'Seeds profile, partition, selection, model '
                     'initialisation and local shuffling.')
flags.DEFINE_integer('eval_every', 5, 'Evaluate every this many rounds.')
flags.DEFINE_integer('eval_last', 0, 'Also evaluate each of the last this '
                     'many rounds (a paper\'s mean over its last 10 rounds).')
flags.DEFINE_string('output_dir', None,
                    'Where the run\'s results go: metrics.csv, tensorboard/, '
                    'summary.json, final_weights.npz, curves.png, '
                    'per_class.png, flags.txt and checkpoints/.')
flags.DEFINE_integer('checkpoint_every', 0,
                     'Save a checkpoint every this many rounds (and after the '
                     'last) in --output_dir/checkpoints; 0: never.')
flags.DEFINE_bool('resume', False,
                  'Continue the run in --output_dir from its latest '
                  'checkpoint (same flags; --rounds may grow).')
flags.DEFINE_integer('max_concurrent_clients', None,
                     'Clients the TFF worker trains at once (default: cores).')
flags.DEFINE_list('workers', None,
                  'host:port of TFF workers (python -m tff_imbalance.worker '
                  '--port=N) that share each round\'s clients; default: one '
                  'local worker. Insecure gRPC: loopback or a private network '
                  'only.')
flags.DEFINE_enum('executor', 'worker', runtime.EXECUTORS,
                  'What runs the TFF computations: worker (TFF\'s C++ '
                  'worker_binary, CPU only, listens on all interfaces) or '
                  'inprocess (TensorFlow in this process, GPUs where present, '
                  'no port; README "Accelerators").')
flags.DEFINE_enum('device', 'auto', inprocess.DEVICE_CHOICES,
                  'With --executor=inprocess: auto (every GPU TensorFlow '
                  'sees, else the CPU), cpu or gpu.')
flags.DEFINE_bool('quiet', False, 'No per-round lines.')

# Ratio Loss and the composition monitor (002).
flags.DEFINE_integer('aux_per_class', 32,
                     'Server auxiliary data: examples per class taken from the '
                     'training pool before the imbalance profile and held out '
                     'of every client, for every algorithm (002 sec 4.1); 0: '
                     'none (then --algo=ratio and --monitor are refused).')
flags.DEFINE_bool('monitor', False,
                  'Run the composition monitor (002 sec 3.2) beside any '
                  'algorithm as a pure diagnostic; --algo=ratio always runs '
                  'it.')
flags.DEFINE_float('ratio_threshold', 1.25,
                   'Monitor filter threshold T_Ra (002 eq. 7).')


# Flag definers by an option's type; a tuple (of floats) is a list flag.
_FLAG_DEFINERS = {
    bool: flags.DEFINE_bool, int: flags.DEFINE_integer,
    float: flags.DEFINE_float, str: flags.DEFINE_string,
    tuple: lambda name, default, help_text: flags.DEFINE_list(
        name, None if default is None else [str(v) for v in default],
        help_text),
}


def _define_option_flags() -> None:
  """One flag per option of every registered method (`learning/options.py`):
  name, default, help and choices come from the method's options dataclass.

  A flag two methods share (--psi: fedfocal and virtual) is defined once;
  where their defaults differ its default is None, "each method's own"
  (`_method_options`), so that flags.txt and --flagfile keep it unset.
  """
  defaults = collections.defaultdict(set)
  for _, options_class in registry.options_classes():
    for name, field in options_lib.flag_fields(options_class):
      defaults[name].add(field.default)
  for _, options_class in registry.options_classes():
    for name, field in options_lib.flag_fields(options_class):
      if name in FLAGS:
        continue
      help_text, choices = field.metadata['help'], field.metadata['choices']
      default = field.default if len(defaults[name]) == 1 else None
      if choices is not None:
        flags.DEFINE_enum(name, default, choices, help_text)
      else:
        _FLAG_DEFINERS[type(field.default)](name, default, help_text)


_define_option_flags()


def exit_on_user_error(main: Callable[[Sequence[str]], None]):
  """Turns `UserInputError` into one line on stderr and exit status 2.

  The wrapped task also checks the run settings and --output_dir before it
  starts, so that a bad directory is refused before any data is loaded.
  SIGTERM stops a run as Ctrl-C does: one line on stderr, exit status 143
  (130 for Ctrl-C), the saved checkpoints kept (`runtime.stop_on_sigterm`).
  """

  @functools.wraps(main)
  def wrapped(argv):
    if len(argv) > 1:
      raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
    if not FLAGS['verbosity'].present:
      # TFF logs INFO lines for every model it wraps; keep the output to ours.
      logging.set_verbosity(logging.WARNING)
    runtime.stop_on_sigterm()
    try:
      _check_output_dir(_run_config())
      main(argv)
    except errors.UserInputError as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(2)
    except KeyboardInterrupt as e:
      message, status = runtime.stop_report(
          e, resumable=bool(FLAGS.output_dir and (FLAGS.checkpoint_every or
                                                  FLAGS.resume)))
      print(message, file=sys.stderr)
      sys.exit(status)

  return wrapped


def set_by_user(flag: str) -> bool:
  """Whether `--flag` was given a value other than its default.

  A value equal to the default changes nothing; and `--flagfile=DIR/flags.txt`
  (which records every flag) must not warn about flags the saved run never
  set.
  """
  return FLAGS[flag].present and FLAGS[flag].value != FLAGS[flag].default


def warn_inapplicable(scopes: Sequence[tuple[str, bool, str, str]]) -> None:
  """One stderr line per flag set on the command line that this run ignores.

  Args:
    scopes: (flag, whether it applies here, this run's setting that makes it
      moot, where it applies), e.g. ('tau', FLAGS.partition == 'tau',
      '--partition=dirichlet', '--partition=tau').
  """
  for flag, applies, setting, where in scopes:
    if set_by_user(flag) and not applies:
      print(f'warning: --{flag} does not apply to {setting} (only to '
            f'{where}); ignored', file=sys.stderr)


def check_values(checks: Sequence[tuple[str, bool, str]]) -> None:
  """Refuses an invalid flag value whether or not this run uses the flag.

  Args:
    checks: (flag, whether its value is valid, what it must be), e.g.
      ('tau', FLAGS.tau > 0, '> 0').

  Raises:
    errors.UserInputError: naming the first invalid flag.
  """
  for flag, valid, requirement in checks:
    if not valid:
      raise errors.UserInputError(
          f'--{flag} must be {requirement} (got {FLAGS[flag].value}).')


def _warn_inapplicable_algorithm_flags(config: registry.AlgorithmConfig,
                                       options) -> None:
  setting = f'--algo={FLAGS.algo}'
  flag_names = [name for name in _experiment_flags() if set_by_user(name)]
  warn_inapplicable([(flag, False, setting, where)
                     for flag, where in registry.inapplicable_flags(
                         FLAGS.algo, config, options, flag_names)])


def _validation_fraction(options) -> float:
  """The per-client validation share (`experiment.validation_fraction_for`).

  Raises:
    errors.UserInputError: for a share outside [0, 1), or a zero share where
      psi selection needs validation losses.
  """
  # _warn_inapplicable_algorithm_flags says so if it is set but unused.
  return experiment.validation_fraction_for(FLAGS.algo, options,
                                            FLAGS.validation_fraction)


def _float_list(flag: str, values: Sequence[str]) -> tuple[float, ...]:
  try:
    return tuple(float(v) for v in values)
  except ValueError:
    raise errors.UserInputError(
        f'--{flag} must be a comma-separated list of numbers (got '
        f'{",".join(values)}).') from None


def _task_module() -> str:
  """The task's module as `python -m` takes it, e.g. 'tasks.mnist_lt'.

  The module the user ran (`tasks.mnist_lt` in the checkout, or
  `tff_imbalance.tasks.mnist_lt`); a console script (`tff-imbalance-mnist-lt`)
  has none, so its package module, which runs from any directory.
  """
  spec = getattr(sys.modules['__main__'], '__spec__', None)
  if spec is not None:
    return spec.name
  script = os.path.splitext(os.path.basename(sys.argv[0]))[0]
  if script.startswith(CONSOLE_SCRIPT_PREFIX):
    task = script[len(CONSOLE_SCRIPT_PREFIX):].replace('-', '_')
    return f'{__package__}.{task}'
  return script


def _task_name(module: str) -> str:
  """'mnist_lt' of 'tasks.mnist_lt' and of 'tff_imbalance.tasks.mnist_lt'.

  Both run the same task: a run started with one resumes with the other.
  """
  return module.rpartition('.')[2]


def _experiment_flags() -> dict[str, flags.Flag]:
  """Flags defined by the task and this module, by name."""
  return {flag.name: flag
          for module, module_flags in FLAGS.flags_by_module_dict().items()
          if not module.startswith(_FOREIGN_FLAG_MODULES)
          for flag in module_flags}


def _read_flags_file(path: str) -> tuple[Optional[str], dict[str, str]]:
  """The task module and the `--flag` lines (by flag name) of a flags.txt."""
  task, lines = None, {}
  with open(path) as f:
    for line in f:
      line = line.strip()
      if line.startswith(_TASK_LINE_PREFIX):
        task = line[len(_TASK_LINE_PREFIX):].split()[0]
      if not line.startswith('--'):
        continue
      name = line[2:].split('=', 1)[0]
      if ('=' not in line and name not in FLAGS and name.startswith('no') and
          name[2:] in FLAGS):
        name = name[2:]  # A false boolean: --noquiet.
      lines[name] = line
  return task, lines


def _flag_differences(path: str) -> list[str]:
  """How the current flags differ from a run's flags.txt, one phrase each."""
  task, saved = _read_flags_file(path)
  differences = []
  if task is not None and _task_name(task) != _task_name(_task_module()):
    differences.append(f'a run of {task}, not {_task_module()}')
  # Saved flags that are not ours here are absl's or TensorFlow's (which vary
  # with what got imported) or were removed since; the task line covers a
  # directory of another task.
  for name, flag in sorted(_experiment_flags().items()):
    if name in _FLAGS_FREE_IN_ONE_RUN:
      continue
    here = flag.serialize() or f'--{name} unset'
    if name in saved:
      if saved[name] != here:
        differences.append(f'{saved[name]} there, {here} here')
    elif flag.value != flag.default:
      # A flag newer than the saved run counts as its default there.
      differences.append(f'--{name} at its default there, {here} here')
  return differences


def _check_same_experiment(output_dir: str) -> None:
  """Refuses a directory that holds the results of another experiment.

  Raises:
    errors.UserInputError: if `output_dir` holds a run (metrics or
      checkpoints) whose flags.txt differs in more than
      `_FLAGS_FREE_IN_ONE_RUN`.
  """
  path = os.path.join(output_dir, FLAGS_FILE)
  holds_results = os.path.exists(
      os.path.join(output_dir, report.METRICS_FILE)) or bool(
          checkpointing.saved_rounds(
              os.path.join(output_dir, report.CHECKPOINT_DIR))) or (
                  # --algo=local keeps its rounds under clients/.
                  os.path.isdir(os.path.join(output_dir,
                                             report.CLIENTS_DIR)))
  # flags.txt alone is a run that stopped before its first round (bad input,
  # a crash while building): nothing to protect.
  if not (os.path.exists(path) and holds_results):
    return
  differences = _flag_differences(path)
  if differences:
    shown = '; '.join(differences[:3]) + (
        f'; and {len(differences) - 3} more' if len(differences) > 3 else '')
    raise errors.UserInputError(
        f'--output_dir={output_dir} holds a run with different flags '
        f'({shown}); use another --output_dir, or the flags in {path}.')


def _record_flags(output_dir: str) -> None:
  """Writes every flag to flags.txt: `--flagfile` reruns the experiment.

  A resumed run records --noresume: the file describes the experiment, and
  `--flagfile` with another --output_dir should start it afresh.
  """
  lines = ['--noresume' if line == '--resume' else line
           for line in FLAGS.flags_into_string().splitlines()]
  path = os.path.join(output_dir, FLAGS_FILE)
  # A complete file or none: a kill mid-write must not leave flags that
  # would then refuse the resumed run.
  report.write_atomically(path, lambda f: f.write(
      f'{_TASK_LINE_PREFIX}{_task_module()} --flagfile={path}\n' +
      '\n'.join(lines) + '\n'))


def _run_config() -> runner.RunConfig:
  return runner.RunConfig(
      rounds=FLAGS.rounds, local_epochs=FLAGS.local_epochs,
      batch_size=FLAGS.batch_size, eval_every=FLAGS.eval_every,
      eval_last=FLAGS.eval_last,
      seed=FLAGS.seed, output_dir=FLAGS.output_dir, quiet=FLAGS.quiet,
      checkpoint_every=FLAGS.checkpoint_every, resume=FLAGS.resume)


def _check_output_dir(config: runner.RunConfig) -> None:
  """Refuses another experiment's directory, then an unusable one."""
  # Flags first: resuming a directory that holds other flags must say so,
  # not ask for --resume.
  if config.output_dir is not None:
    _check_same_experiment(config.output_dir)
  runner.check_output_dir(config)


def _flag_value(flag: str):
  """A flag's value; list flags become tuples of floats."""
  value = FLAGS[flag].value
  return _float_list(flag, value) if isinstance(value, list) else value


def _algorithm_config() -> registry.AlgorithmConfig:
  """`AlgorithmConfig` with every field that has a flag of its name set."""
  return registry.AlgorithmConfig(**{
      field.name: _flag_value(field.name)
      for field in dataclasses.fields(registry.AlgorithmConfig)
      if field.name in FLAGS})


def _method_options():
  """The options of --algo, from their flags (None without options).

  Every method's options are built, so that an invalid value stops the run
  whether or not --algo uses it.
  """
  # An unset shared flag (default None) takes each method's own default.
  built = {name: options_class(**{
      field.name: (field.default if FLAGS[flag].value is None else
                   _flag_value(flag))
      for flag, field in options_lib.flag_fields(options_class)})
           for name, options_class in registry.options_classes()}
  return built.get(FLAGS.algo)


def _minority_classes(num_classes: int) -> Optional[list[int]]:
  if FLAGS.minority_classes is None:
    return None
  try:
    classes = [int(c) for c in FLAGS.minority_classes]
  except ValueError:
    raise errors.UserInputError(
        f'--minority_classes must be a comma-separated list of class ids '
        f'(got {",".join(FLAGS.minority_classes)}).') from None
  bad = [c for c in classes if not 0 <= c < num_classes]
  if bad:
    raise errors.UserInputError(
        f'--minority_classes holds {bad}, outside [0, {num_classes}).')
  return classes


def hold_out_auxiliary(source: arrays.SourceData) -> auxiliary.AuxiliarySplit:
  """The server's `--aux_per_class` examples per class, drawn with `--seed`
  from the training pool before any profile or partition."""
  return auxiliary.hold_out(source.train.y, source.num_classes,
                            FLAGS.aux_per_class, FLAGS.seed)


def run_experiment(source: arrays.SourceData,
                   client_partition: Sequence[np.ndarray],
                   aux: auxiliary.AuxiliarySplit,
                   client_ids: Optional[Sequence[str]] = None,
                   data_summary: Optional[dict] = None) -> dict:
  """Trains the flagged algorithm on a partitioned source and reports.

  The flags' translation into `experiment.prepare`, the library's call.

  Args:
    source: the loaded data.
    client_partition: per client, indices into `source.train`.
    aux: the server's auxiliary split (`hold_out_auxiliary`): its examples
      go to the algorithms that use them, its summary to summary.json.
    client_ids: optional client names.
    data_summary: the task's own facts about the data preparation for
      summary.json; the auxiliary split's and the split's composition
      (clients x classes) are added here.

  Returns:
    The run summary.
  """
  data_summary = dict(data_summary or {}, **aux.summary(),
                      **partition.composition_summary(
                          source.train.y, client_partition,
                          source.num_classes))
  server_data = aux.server_data(source.train)
  config = _run_config()
  _check_output_dir(config)
  # Every algorithm flag is validated here, whether or not --algo uses it.
  algorithm_config = _algorithm_config()
  options = _method_options()
  _warn_inapplicable_algorithm_flags(algorithm_config, options)
  num_classes = source.num_classes
  stats.validate_labels(source.test.y, num_classes)
  data = federated.build_federated_data(
      source.train, client_partition, num_classes,
      validation_fraction=_validation_fraction(options),
      seed=FLAGS.seed, client_ids=client_ids)
  model_spec = spec_lib.ModelSpec(FLAGS.model, tuple(source.train.x.shape[1:]),
                                  num_classes, FLAGS.seed)
  minority = _minority_classes(num_classes)
  runtime.set_execution_context(FLAGS.executor, FLAGS.device, FLAGS.workers,
                                FLAGS.max_concurrent_clients)
  prepared = experiment.prepare(
      FLAGS.algo, model_spec, data, source.test, config=algorithm_config,
      options=options, aux_data=server_data, minority_classes=minority,
      **dataclasses.asdict(config))
  if FLAGS.output_dir is not None:
    _record_flags(FLAGS.output_dir)
  summary = prepared.run(extra_summary=dict(
      data=data_summary, execution=runtime.execution_summary()))
  print(evaluation.per_class_table(summary, prepared.train_class_counts,
                                   source.class_names))
  if FLAGS.output_dir is not None:
    print(f'wrote {os.path.join(FLAGS.output_dir, "summary.json")}')
  return summary

