"""FEMNIST: natural writer clients, 62 classes, optionally k-minority.

  python -m tasks.femnist --algo=fedavg --data_dir=DIR_WITH_LEAF_train_test

Sources: LEAF JSON (`--source=leaf --data_dir=...`, LEAF's `train/` and
`test/` folders) or TFF's own EMNIST sqlite (`--source=tff
--cache_dir=...`, which reads `<cache_dir>/emnist_all.sqlite`).
"""

from absl import app
from absl import flags

from tasks import common
from tff_imbalance import errors
from tff_imbalance.data import auxiliary
from tff_imbalance.data import partition
from tff_imbalance.data import profiles
from tff_imbalance.data.sources import registry as sources

FLAGS = flags.FLAGS

flags.DEFINE_enum('source', 'leaf', ['leaf', 'tff'],
                  'leaf: LEAF JSON from --data_dir; tff: TFF EMNIST sqlite '
                  'from --cache_dir.')
flags.DEFINE_string('data_dir', None, 'LEAF FEMNIST directory (train/, test/).')
flags.DEFINE_string('cache_dir', None,
                    'Directory holding emnist_all.sqlite (TFF source).')
flags.DEFINE_bool('only_digits', False, 'TFF source: 10 digit classes only.')
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


def _load():
  if FLAGS.source == 'leaf':
    if not FLAGS.data_dir:
      raise errors.UserInputError(
          '--data_dir is required with --source=leaf: pass the LEAF FEMNIST '
          'directory that holds train/ and test/.')
    source = sources.load_source('leaf_femnist', data_dir=FLAGS.data_dir,
                                 max_test_per_class=FLAGS.max_test_per_class,
                                 seed=FLAGS.seed)
  else:
    if not FLAGS.cache_dir:
      raise errors.UserInputError(
          '--cache_dir is required with --source=tff: pass the directory '
          'holding emnist_all.sqlite.')
    source = sources.load_source('tff_emnist', cache_dir=FLAGS.cache_dir,
                                 only_digits=FLAGS.only_digits,
                                 max_clients=FLAGS.max_clients,
                                 max_test_per_class=FLAGS.max_test_per_class,
                                 seed=FLAGS.seed)
  return source


@common.exit_on_user_error
def main(argv):
  del argv
  source = _load()
  # The server's auxiliary examples leave the pool before the profile.
  aux = auxiliary.hold_out(source.train.y, source.num_classes,
                           FLAGS.aux_per_class, FLAGS.seed)
  kept = aux.remaining
  if FLAGS.profile == 'unbalanced':
    kept = kept[profiles.kminority_indices(
        source.train.y[kept], source.num_classes,
        [int(c) for c in FLAGS.minority_profile_classes], FLAGS.minority_ratio,
        FLAGS.seed)]
  writer_ids, parts = partition.writer_partition(source.train_writer_ids[kept])
  if FLAGS.max_clients is not None and FLAGS.source == 'leaf':
    writer_ids, parts = writer_ids[:FLAGS.max_clients], parts[:FLAGS.max_clients]
  common.run_experiment(
      source, [kept[p] for p in parts], client_ids=writer_ids,
      data_summary=dict(source=FLAGS.source, profile=FLAGS.profile,
                        num_writers=len(writer_ids), **aux.summary()),
      server_data=aux.server_data(source.train))


if __name__ == '__main__':
  app.run(main)
