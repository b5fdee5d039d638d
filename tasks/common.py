"""Flags and wiring shared by every task: algorithm, model, rounds, output.

A task module defines its data flags, turns them into a `SourceData` and a
client partition, and calls `run_experiment`; everything after the partition
is the same for every task.
"""

import functools
import os
import sys
from typing import Callable, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np

from tff_imbalance import compat  # pylint: disable=unused-import  (TF logging)
from tff_imbalance import errors
from tff_imbalance import evaluation
from tff_imbalance import runner
from tff_imbalance import runtime
from tff_imbalance.data import arrays
from tff_imbalance.data import federated
from tff_imbalance.data import stats
from tff_imbalance.learning import registry
from tff_imbalance.learning import selection
from tff_imbalance.models import builders
from tff_imbalance.models import spec as spec_lib

FLAGS = flags.FLAGS

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
flags.DEFINE_float('server_momentum', 0.9, 'FedAvgM server momentum.')
flags.DEFINE_float('fedprox_mu', 0.01, 'FedProx proximal strength mu.')
flags.DEFINE_enum('loss', 'ce', ['ce', 'focal'],
                  'Local loss for every algorithm: cross-entropy or focal '
                  '(000 eq. 6; fedfocal always uses focal).')
flags.DEFINE_float('focal_gamma', 2.0, 'Focal loss gamma (>= 0).')
flags.DEFINE_list('focal_alpha', ['1.0'],
                  'Focal loss alpha: one weight, or one per class.')
flags.DEFINE_float('psi', 0.8,
                   'fedfocal: share of last round\'s improved clients kept '
                   '(000 eqs. 7-13), in [0, 1]; 0 is uniform sampling.')
flags.DEFINE_float('validation_fraction', 0.1,
                   'Share of each client\'s examples (per class) held out for '
                   'local validation.')
flags.DEFINE_list('minority_classes', None,
                  'Classes averaged into minority_accuracy (Ac.M); default: '
                  'the 30% of classes with the fewest training examples.')
flags.DEFINE_integer('seed', 0, 'Seeds profile, partition, selection, model '
                     'initialisation and local shuffling.')
flags.DEFINE_integer('eval_every', 5, 'Evaluate every this many rounds.')
flags.DEFINE_string('output_dir', None,
                    'Where metrics.csv, summary.json and flags.txt go.')
flags.DEFINE_integer('max_concurrent_clients', None,
                     'Clients the TFF worker trains at once (default: cores).')
flags.DEFINE_bool('quiet', False, 'No per-round lines.')


def exit_on_user_error(main: Callable[[Sequence[str]], None]):
  """Turns `UserInputError` into one line on stderr and exit status 2."""

  @functools.wraps(main)
  def wrapped(argv):
    if len(argv) > 1:
      raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
    if not FLAGS['verbosity'].present:
      # TFF logs INFO lines for every model it wraps; keep the output to ours.
      logging.set_verbosity(logging.WARNING)
    try:
      main(argv)
    except errors.UserInputError as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(2)

  return wrapped


def _float_list(flag: str, values: Sequence[str]) -> tuple[float, ...]:
  try:
    return tuple(float(v) for v in values)
  except ValueError:
    raise errors.UserInputError(
        f'--{flag} must be a comma-separated list of numbers (got '
        f'{",".join(values)}).') from None


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


def run_experiment(source: arrays.SourceData,
                   client_partition: Sequence[np.ndarray],
                   client_ids: Optional[Sequence[str]] = None,
                   data_summary: Optional[dict] = None) -> dict:
  """Trains the flagged algorithm on a partitioned source and reports.

  Args:
    source: the loaded data.
    client_partition: per client, indices into `source.train`.
    client_ids: optional client names.
    data_summary: facts about the data preparation for summary.json.

  Returns:
    The run summary.
  """
  num_classes = source.num_classes
  stats.validate_labels(source.test.y, num_classes)
  data = federated.build_federated_data(
      source.train, client_partition, num_classes,
      validation_fraction=FLAGS.validation_fraction, seed=FLAGS.seed,
      client_ids=client_ids)
  train_counts = stats.class_counts(data.train_labels(), num_classes)
  if FLAGS.algo in registry.PSI_SELECTION_ALGORITHMS:
    selector = selection.PsiSelector(data.num_clients, FLAGS.clients_per_round,
                                     FLAGS.psi, FLAGS.seed)
  else:
    selector = selection.UniformSelector(data.num_clients,
                                         FLAGS.clients_per_round, FLAGS.seed)
  config = runner.RunConfig(
      rounds=FLAGS.rounds, local_epochs=FLAGS.local_epochs,
      batch_size=FLAGS.batch_size, eval_every=FLAGS.eval_every,
      seed=FLAGS.seed, output_dir=FLAGS.output_dir, quiet=FLAGS.quiet)
  algorithm_config = registry.AlgorithmConfig(
      client_lr=FLAGS.client_lr, client_momentum=FLAGS.client_momentum,
      server_lr=FLAGS.server_lr, server_momentum=FLAGS.server_momentum,
      fedprox_mu=FLAGS.fedprox_mu, loss=FLAGS.loss,
      focal_gamma=FLAGS.focal_gamma,
      focal_alpha=_float_list('focal_alpha', FLAGS.focal_alpha),
      clients_per_round=FLAGS.clients_per_round, psi=FLAGS.psi)
  model_spec = spec_lib.ModelSpec(FLAGS.model, tuple(source.train.x.shape[1:]),
                                  num_classes, FLAGS.seed)
  minority = _minority_classes(num_classes)
  runtime.set_local_execution_context(FLAGS.max_concurrent_clients)
  process = registry.build_process(FLAGS.algo, model_spec, algorithm_config)
  evaluator = runner.Evaluator(model_spec, source.test, train_counts,
                               minority_classes=minority)
  partition_stats = stats.summarize(
      data.train_labels(), data.client_train_partition(), num_classes)
  if FLAGS.output_dir is not None:
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    FLAGS.append_flags_into_file(os.path.join(FLAGS.output_dir, 'flags.txt'))
  summary = runner.run(
      process, data, selector, evaluator, config,
      extra_summary=dict(algo=FLAGS.algo, model=FLAGS.model, seed=FLAGS.seed,
                         train_class_counts=train_counts.tolist(),
                         partition=partition_stats, data=data_summary or {}))
  print(evaluation.per_class_table(summary, train_counts, source.class_names))
  if FLAGS.output_dir is not None:
    print(f'wrote {os.path.join(FLAGS.output_dir, "summary.json")}')
  return summary

