"""FEMNIST: natural writer clients, 62 classes, optionally k-minority.

  python -m tasks.femnist --algo=fedfocal   # the shipped 10-writer sample
  python -m tasks.femnist --algo=fedavg --data_dir=DIR_WITH_LEAF_train_test

Sources: LEAF JSON (`--source=leaf --data_dir=...`, LEAF's `train/` and
`test/` folders; without `--data_dir`, the real 10-writer LEAF subset shipped
in the package, `tff_imbalance/data/sources/femnist_sample.py`) or TFF's own
EMNIST sqlite (`--source=tff --cache_dir=...`, which reads
`<cache_dir>/emnist_all.sqlite`). The balanced test subset is drawn with a
fixed seed, never `--seed`.
"""

from absl import app
from absl import flags

from tff_imbalance import errors
from tff_imbalance.data import arrays
from tff_imbalance.data import partition
from tff_imbalance.data import profiles
from tff_imbalance.data.sources import registry as sources
from tff_imbalance.tasks import common

FLAGS = flags.FLAGS

flags.DEFINE_enum('source', 'leaf', ['leaf', 'tff'],
                  'leaf: LEAF JSON from --data_dir (default: the 10-writer '
                  'LEAF sample shipped in the package); tff: TFF EMNIST '
                  'sqlite from --cache_dir.')
flags.DEFINE_string('data_dir', None,
                    'LEAF FEMNIST directory (train/, test/); unset: the '
                    'shipped sample.')
flags.DEFINE_string('cache_dir', None,
                    'Directory holding emnist_all.sqlite (TFF source).')
flags.DEFINE_bool('only_digits', False, 'The 10 digit classes only (TFF: its '
                  'digits split; LEAF: labels 0-9), as 000\'s 10-unit '
                  'FEMNIST model.')
flags.DEFINE_integer('max_clients', None,
                     'Keep only the first N writers (sorted ids).')
flags.DEFINE_integer('max_test_per_class', 200,
                     'Balanced test set: at most this many per class.')
flags.DEFINE_enum('profile', 'none', ['none', 'unbalanced'],
                  'unbalanced: --minority_profile_classes cut to 1:'
                  '--minority_ratio (000 sec 4.2: 1:10 on FEMNIST).')
flags.DEFINE_list('minority_profile_classes', ['0', '1', '2', '9'],
                  'Classes reduced by the unbalanced profile.')
flags.DEFINE_float('minority_ratio', 10.0,
                   'Minority classes hold 1/ratio of a majority class.')


_DIGITS = 10  # FEMNIST's classes 0-9.


def _load():
  # The balanced test subset keeps the loaders' fixed seed, not --seed: the
  # test set is the same for every run.
  if FLAGS.source == 'tff':
    if not FLAGS.cache_dir:
      raise errors.UserInputError(
          '--cache_dir is required with --source=tff: pass the directory '
          'holding emnist_all.sqlite.')
    return sources.load_source('tff_emnist', cache_dir=FLAGS.cache_dir,
                               only_digits=FLAGS.only_digits,
                               max_clients=FLAGS.max_clients,
                               max_test_per_class=FLAGS.max_test_per_class)
  if FLAGS.data_dir:
    source = sources.load_source('leaf_femnist', data_dir=FLAGS.data_dir,
                                 max_test_per_class=FLAGS.max_test_per_class)
  else:
    source = sources.load_source('femnist_sample',
                                 max_test_per_class=FLAGS.max_test_per_class)
  # LEAF's labels 0-9 are the digits.
  return (arrays.first_classes(source, _DIGITS) if FLAGS.only_digits else
          source)


def _check_flags() -> None:
  """Invalid data flags stop the run even where unused; set but unused ones
  get a warning (`common`)."""
  common.check_values([('minority_ratio', FLAGS.minority_ratio >= 1, '>= 1')])
  unbalanced = FLAGS.profile == 'unbalanced'
  common.warn_inapplicable([
      ('minority_ratio', unbalanced, f'--profile={FLAGS.profile}',
       '--profile=unbalanced'),
      ('minority_profile_classes', unbalanced, f'--profile={FLAGS.profile}',
       '--profile=unbalanced'),
  ])


@common.exit_on_user_error
def main(argv):
  del argv
  _check_flags()
  source = _load()
  # The server's auxiliary examples leave the pool before the profile.
  aux = common.hold_out_auxiliary(source)
  kept = aux.remaining
  if FLAGS.profile == 'unbalanced':
    kept = kept[profiles.kminority_indices(
        source.train.y[kept], source.num_classes,
        [int(c) for c in FLAGS.minority_profile_classes], FLAGS.minority_ratio,
        FLAGS.seed)]
  writer_ids, parts = partition.writer_partition(source.train_writer_ids[kept])
  if FLAGS.max_clients is not None and FLAGS.source == 'leaf':
    writer_ids, parts = writer_ids[:FLAGS.max_clients], parts[:FLAGS.max_clients]
  client_partition = [kept[p] for p in parts]
  shipped = FLAGS.source == 'leaf' and not FLAGS.data_dir
  common.run_experiment(
      source, client_partition, aux, client_ids=writer_ids,
      data_summary=dict(source='leaf_sample' if shipped else FLAGS.source,
                        profile=FLAGS.profile, num_writers=len(writer_ids)))


def run() -> None:
  """The program (`python -m tasks.femnist`, `tff-imbalance-femnist`)."""
  app.run(main)


if __name__ == '__main__':
  run()
