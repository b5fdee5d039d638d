"""An independent plain-TF FedAvg on full MNIST-LT (issue 16's check).

  python -m bench.plain_fedavg --data_dir=../shared/data/mnist --seed=0 \
      --output_dir=runs/plain_fedavg/seed0

The same protocol as `bench.reproduce --table=fedavg_check`, written again
without TFF and without any of `tff_imbalance`, so that the two share no line
that could carry the same bug: its own idx reader, long tail, split, model,
client loop and average. Each round, every client starts from the global
weights w_t with zero momentum and runs one epoch of SGD with momentum
(Keras's form, v <- m v - lr g, w <- w + v) over its shuffled examples in
batches of 64; the server sets

  w_{t+1} = sum_k (n_k / n) w_t^k          (McMahan et al. 2017, Alg. 1)

with n_k client k's example count. Data: full MNIST-LT, n_c = min(N_c,
int(6000 * IR^(-c/9))) digits of class c drawn at random (14,809 at IR 100),
each class cut over the K clients at floor(cumsum(q) * n_c) with
q ~ Dir(alpha * 1_K), redrawn while a client has fewer than 10 examples.
Model: the McMahan CNN (conv5x5-32, pool, conv5x5-64, pool, dense-512,
dense-10; Keras's default initialisers). Evaluation: balanced accuracy
(mean per-class recall) and tail-3 accuracy (digits 7-9) on the 10k test set.

It writes `metrics.csv` (round, round_seconds, balanced_accuracy) and
`summary.json` in the run layout `bench.common` reads, so the check's grid runs
and reuses it like a task. `PlainFedAvg` (model, client loop and average) is
also what `bench/fedavg_paired.py` runs beside our FedAvg on identical inputs.
"""

import csv
import gzip
import json
import os
import time
from typing import Iterable, Sequence

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

FLAGS = flags.FLAGS
flags.DEFINE_string('data_dir', '../shared/data/mnist',
                    'Directory of the four MNIST idx files (.gz or not).')
flags.DEFINE_integer('seed', 0, 'Seed of the draw, split, weights and order.')
flags.DEFINE_integer('rounds', 30, 'Rounds.')
flags.DEFINE_integer('eval_every', 5, 'Evaluate every this many rounds.')
flags.DEFINE_float('imbalance_ratio', 100.0, 'IR = n_0 / n_9.')
flags.DEFINE_integer('num_clients', 10, 'Clients K, all in every round.')
flags.DEFINE_float('dirichlet_alpha', 1.0, 'alpha of Dir(alpha * 1_K).')
flags.DEFINE_float('client_lr', 0.01, 'Client SGD learning rate.')
flags.DEFINE_float('client_momentum', 0.9, 'Client SGD momentum.')
flags.DEFINE_integer('batch_size', 64, 'Client batch size.')
flags.DEFINE_string('output_dir', None, 'Where metrics.csv and summary.json '
                    'go.')
flags.DEFINE_bool('quiet', False, 'Print nothing per round.')

_NUM_CLASSES = 10
_TAIL_CLASSES = (7, 8, 9)
_MIN_CLIENT_SIZE = 10


def _read_idx(data_dir: str, stem: str, magic: int) -> np.ndarray:
  for name in (stem, stem + '.gz'):
    path = os.path.join(data_dir, name)
    if os.path.exists(path):
      opener = gzip.open if name.endswith('.gz') else open
      with opener(path, 'rb') as f:
        raw = f.read()
      break
  else:
    raise app.UsageError(f'{data_dir} has no {stem}[.gz]: pass the MNIST '
                         'directory as --data_dir.')
  if int.from_bytes(raw[:4], 'big') != magic:
    raise app.UsageError(f'{stem}: magic number is not {magic}.')
  ndim = magic & 0xff
  shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], 'big')
           for i in range(ndim)]
  return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _images_labels(split: str) -> tuple[np.ndarray, np.ndarray]:
  images = _read_idx(FLAGS.data_dir, f'{split}-images-idx3-ubyte', 2051)
  labels = _read_idx(FLAGS.data_dir, f'{split}-labels-idx1-ubyte', 2049)
  return ((images.astype(np.float32) / 255.0)[..., None],
          labels.astype(np.int64))


def _long_tail(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  head = len(labels) / _NUM_CLASSES
  chosen = []
  for c in range(_NUM_CLASSES):
    pool = np.flatnonzero(labels == c)
    n_c = min(pool.size, int(head * FLAGS.imbalance_ratio **
                             (-c / (_NUM_CLASSES - 1))))
    chosen.append(rng.choice(pool, size=n_c, replace=False))
  return np.concatenate(chosen)


def _split(labels: np.ndarray, kept: np.ndarray,
           rng: np.random.Generator) -> list[np.ndarray]:
  k = FLAGS.num_clients
  while True:
    parts = [[] for _ in range(k)]
    for c in range(_NUM_CLASSES):
      pool = rng.permutation(kept[labels[kept] == c])
      q = rng.dirichlet(np.full(k, FLAGS.dirichlet_alpha))
      cuts = (np.cumsum(q) * pool.size).astype(np.int64)[:-1]
      for part, piece in zip(parts, np.split(pool, cuts)):
        part.append(piece)
    clients = [np.concatenate(p) for p in parts]
    if min(c.size for c in clients) >= _MIN_CLIENT_SIZE:
      return clients


def build_model() -> tf.keras.Model:
  """The McMahan CNN with Keras's default initialisers."""
  layers = tf.keras.layers
  return tf.keras.Sequential([
      tf.keras.Input((28, 28, 1)),
      layers.Conv2D(32, 5, padding='same', activation='relu'),
      layers.MaxPool2D(2, padding='same'),
      layers.Conv2D(64, 5, padding='same', activation='relu'),
      layers.MaxPool2D(2, padding='same'),
      layers.Flatten(),
      layers.Dense(512, activation='relu'),
      layers.Dense(_NUM_CLASSES)])


Batches = Iterable[tuple[np.ndarray, np.ndarray]]


class PlainFedAvg:
  """FedAvg of one Keras model that each client trains in turn.

  `model` holds the global weights w_t between rounds; `run_round` takes
  each client's batches (images [B, 28, 28, 1] float32, labels [B] int64)
  and leaves w_{t+1} in `model`.
  """

  def __init__(self, client_lr: float, client_momentum: float):
    self.model = build_model()
    self._velocity = [tf.Variable(tf.zeros_like(w))
                      for w in self.model.trainable_weights]
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    weights, velocity = self.model.trainable_weights, self._velocity

    # One trace for every batch size (each client's last batch is smaller).
    @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1]),
                                  tf.TensorSpec([None], tf.int64)])
    def train_step(x, y):
      with tf.GradientTape() as tape:
        loss = loss_fn(y, self.model(x, training=True))
      grads = tape.gradient(loss, weights)
      for w, v, g in zip(weights, velocity, grads):
        v.assign(client_momentum * v - client_lr * g)
        w.assign_add(v)

    @tf.function
    def predict(x):
      return tf.argmax(self.model(x, training=False), axis=1)

    self._train_step, self._predict = train_step, predict

  def run_round(self, clients: Sequence[Batches]) -> None:
    """w_{t+1} = sum_k (n_k / n) w_t^k over the clients' local epochs."""
    global_weights = self.model.get_weights()
    trained, sizes = [], []
    for batches in clients:
      self.model.set_weights(global_weights)
      for v in self._velocity:
        v.assign(tf.zeros_like(v))
      size = 0
      for x, y in batches:
        self._train_step(x, y)
        size += len(y)
      trained.append(self.model.get_weights())
      sizes.append(size)
    sizes = np.array(sizes, dtype=np.float64)
    new_weights = [np.zeros_like(w) for w in global_weights]
    for weights, share in zip(trained, sizes / sizes.sum()):
      for average, w in zip(new_weights, weights):
        average += share * w
    self.model.set_weights(new_weights)

  def recall(self, x_test: np.ndarray, y_test: np.ndarray) -> np.ndarray:
    """Each class's recall on the test set: [C]."""
    predicted = np.concatenate([
        self._predict(x_test[i:i + 1000]).numpy()
        for i in range(0, len(x_test), 1000)])
    return np.array([np.mean(predicted[y_test == c] == c)
                     for c in range(_NUM_CLASSES)])


def main(argv):
  del argv
  tf.keras.utils.set_random_seed(FLAGS.seed)
  tf.config.experimental.enable_op_determinism()
  rng = np.random.default_rng(FLAGS.seed)
  x_train, y_train = _images_labels('train')
  x_test, y_test = _images_labels('t10k')
  clients = _split(y_train, _long_tail(y_train, rng), rng)
  sizes = np.array([c.size for c in clients], dtype=np.float64)
  fedavg = PlainFedAvg(FLAGS.client_lr, FLAGS.client_momentum)

  def batches(order: np.ndarray) -> Batches:
    for i in range(0, order.size, FLAGS.batch_size):
      batch = order[i:i + FLAGS.batch_size]
      yield x_train[batch], y_train[batch]

  os.makedirs(FLAGS.output_dir, exist_ok=True)
  history, rows = [], []
  for round_num in range(1, FLAGS.rounds + 1):
    start = time.perf_counter()
    # Drawn client by client, in the order they train (the runs' stream).
    fedavg.run_round(batches(rng.permutation(client)) for client in clients)
    row = dict(round=round_num, round_seconds=time.perf_counter() - start)
    if round_num % FLAGS.eval_every == 0 or round_num == FLAGS.rounds:
      recall = fedavg.recall(x_test, y_test)
      balanced = float(recall.mean())
      row['balanced_accuracy'] = balanced
      history.append(dict(round=round_num, balanced_accuracy=balanced))
      if not FLAGS.quiet:
        print(f'round {round_num}: balanced accuracy {balanced:.4f}',
              flush=True)
    rows.append(row)

  with open(os.path.join(FLAGS.output_dir, 'metrics.csv'), 'w',
            newline='') as f:
    writer = csv.DictWriter(f, ['round', 'round_seconds',
                                'balanced_accuracy'])
    writer.writeheader()
    writer.writerows(rows)
  summary = dict(history=history, balanced_accuracy=history[-1][
      'balanced_accuracy'], minority_accuracy=float(np.mean(
          recall[list(_TAIL_CLASSES)])), client_sizes=sizes.astype(
              int).tolist(), train_examples=int(sizes.sum()))
  with open(os.path.join(FLAGS.output_dir, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=1)


if __name__ == '__main__':
  # Required of the program only: bench/fedavg_paired.py imports the module.
  flags.mark_flag_as_required('output_dir')
  app.run(main)
