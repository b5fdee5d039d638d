"""Partitioned arrays -> TFF ClientData and per-round client datasets.

A `FederatedData` holds the training pool once and, per client, index arrays
into it for a training and a validation split; it never copies images until a
round asks for a client's dataset. The order of a client's training examples
in each local epoch is a numpy permutation drawn from
(seed, round, client, epoch) before the dataset is built: the dataset itself
holds no random op, so every pass over it gives the same batches (a client
computation may read its data several times in a round), a run repeats bit
for bit, and every round and epoch still sees a fresh order.

`ClientPopulation` writes the per-round datasets once over two accessors
(a client's training and validation examples); `FederatedData` implements
them over its pool, `client_data.ClientDataPopulation` over a user's TFF
`ClientData`.
"""

import abc
import collections
import dataclasses
from typing import Sequence

import numpy as np
import tensorflow as tf

from tff_imbalance import compat
from tff_imbalance.data import arrays
from tff_imbalance.data import partition as partition_lib

tff = compat.tff

# The client-data key of a client's index in the population (see
# `ClientPopulation.round_inputs`).
CLIENT_INDEX = 'client_index'
# The client-data key of a client's training examples for evaluating the
# received model (one pass; see `ClientPopulation.round_inputs`).
EVALUATION = 'evaluation'


def derived_seed(*parts: int) -> int:
  """A 31-bit seed for TF ops, derived from integers (seed, round, client...)."""
  return int(np.random.SeedSequence(list(parts)).generate_state(1)[0] >> 1)


class ClientPopulation(abc.ABC):
  """Clients' per-round datasets, written once over per-client examples.

  A subclass says how many clients there are and gives each client's
  training and validation examples; this class turns them into what a
  process's `next` takes (`round_inputs`), with the seeded per-round order of
  `train_dataset`.
  """

  @property
  @abc.abstractmethod
  def num_clients(self) -> int:
    """The number of clients N; clients are indexed 0..N-1."""

  @abc.abstractmethod
  def train_examples(self, client_index: int) -> arrays.LabeledArrays:
    """A client's training examples, in stored order."""

  @abc.abstractmethod
  def validation_examples(self, client_index: int) -> arrays.LabeledArrays:
    """A client's validation examples (possibly none)."""

  def train_dataset(self, client_index: int, *, round_num: int,
                    local_epochs: int, batch_size: int,
                    seed: int) -> tf.data.Dataset:
    """The batched local-training dataset of one client for one round.

    Local epoch e visits the client's examples in the order
    `epoch_order(len, seed=seed, round_num=round_num, client_index=k,
    epoch=e)`; the `local_epochs` orders are concatenated and then batched, so
    a batch may span two epochs (as `repeat(E).batch(B)` does). The examples
    are stored once and each batch is a `gather` by index, not E copies.

    A TF `shuffle` would not do: with `reshuffle_each_iteration` every new
    iterator takes the next seed of the dataset's seed generator, and inside a
    client's `tf.function` the order in which two passes (statistics, then
    training) start is not fixed, so such a client saw a random one of
    several orders.
    """
    examples = self.train_examples(client_index)
    order = np.concatenate([
        epoch_order(len(examples), seed=seed, round_num=round_num,
                    client_index=client_index, epoch=epoch)
        for epoch in range(local_epochs)])
    return _gathered_batches(examples, order, batch_size)

  def round_inputs(self, client_indices: Sequence[int], *, round_num: int,
                   local_epochs: int, batch_size: int, seed: int,
                   with_validation: bool,
                   with_client_index: bool = False,
                   with_population: bool = False) -> list:
    """What `process.next` takes for a cohort, in cohort order.

    Plain training datasets; or per client `OrderedDict(train, ...)` with,
    `with_validation`, `validation` and `slot` (its position in the cohort:
    the shared client work's per-slot validation reports, used by psi
    selection) and, `with_client_index`, `client_index` (its index in the
    population, for per-client server state such as CLIMB's duals); both
    indices are one-element int32 datasets.

    `with_population` (CLIMB's dual step, which reads every client's loss):
    every client of the population instead, in index order, those outside
    `client_indices` with an empty `train` dataset (they train on nothing and
    carry aggregation weight 0), each with `client_index` and `evaluation`,
    its training examples in one pass in stored order. Every call then has
    exactly N clients, which TFF's worker needs (one executor per distinct
    number of clients would leak memory).
    """
    if with_population and with_validation:
      raise ValueError('with_population gives no cohort slots; it does not '
                       'combine with with_validation.')
    cohort = [int(k) for k in client_indices]
    members = range(self.num_clients) if with_population else cohort
    training = set(cohort)
    with_client_index = with_client_index or with_population
    inputs = []
    for slot, k in enumerate(members):
      if k in training:
        train = self.train_dataset(k, round_num=round_num,
                                   local_epochs=local_epochs,
                                   batch_size=batch_size, seed=seed)
      else:
        train = _gathered_batches(self.train_examples(k).take([]),
                                  np.zeros([0], np.int64), batch_size)
      if not (with_validation or with_client_index):
        inputs.append(train)
        continue
      client_input = collections.OrderedDict(train=train)
      if with_validation:
        client_input.update(self._validation_input(int(k), slot, batch_size))
      if with_population:
        client_input[EVALUATION] = _examples_dataset(
            self.train_examples(k)).batch(batch_size)
      if with_client_index:
        client_input[CLIENT_INDEX] = tf.data.Dataset.from_tensors(np.int32(k))
      inputs.append(client_input)
    return inputs

  def validation_inputs(self, client_indices: Sequence[int],
                        batch_size: int) -> list:
    """Per client `OrderedDict(validation, slot)`, in cohort order: the
    validation half of `round_inputs(..., with_validation=True)` (psi
    selection's evaluation of a new global model on last round's cohort)."""
    return [self._validation_input(int(k), slot, batch_size)
            for slot, k in enumerate(client_indices)]

  def _validation_input(self, client_index: int, slot: int,
                        batch_size: int) -> collections.OrderedDict:
    return collections.OrderedDict(
        validation=self.validation_dataset(client_index, batch_size),
        slot=tf.data.Dataset.from_tensors(np.int32(slot)))

  def validation_dataset(self, client_index: int,
                         batch_size: int) -> tf.data.Dataset:
    """The batched validation dataset of one client."""
    return _examples_dataset(
        self.validation_examples(client_index)).batch(batch_size)


@dataclasses.dataclass(frozen=True)
class FederatedData(ClientPopulation):
  """Clients' training and validation splits over one training pool.

  Attributes:
    pool: the training examples every index refers to.
    client_ids: one id per client.
    train_indices: per client, indices into `pool` for local training.
    validation_indices: per client, indices into `pool` for local validation
      (empty arrays when no validation split was requested).
    num_classes: number of classes C.
  """
  pool: arrays.LabeledArrays
  client_ids: tuple[str, ...]
  train_indices: tuple[np.ndarray, ...]
  validation_indices: tuple[np.ndarray, ...]
  num_classes: int

  @property
  def num_clients(self) -> int:
    return len(self.client_ids)

  def train_examples(self, client_index: int) -> arrays.LabeledArrays:
    return self.pool.take(self.train_indices[client_index])

  def validation_examples(self, client_index: int) -> arrays.LabeledArrays:
    return self.pool.take(self.validation_indices[client_index])

  def train_labels(self) -> np.ndarray:
    """Labels of every client's training examples, concatenated."""
    return self.pool.y[np.concatenate(self.train_indices)]

  def client_train_partition(self) -> list[np.ndarray]:
    """Per-client training indices into `train_labels()`-ordered positions."""
    sizes = np.cumsum([0] + [len(i) for i in self.train_indices])
    return [np.arange(a, b) for a, b in zip(sizes[:-1], sizes[1:])]

  def pooled(self) -> 'FederatedData':
    """One virtual client holding every client's training and validation
    examples (centralized training on exactly the federated training set)."""
    return dataclasses.replace(
        self, client_ids=('pooled',),
        train_indices=(np.concatenate(self.train_indices),),
        validation_indices=(np.concatenate(self.validation_indices),))

  def only_client(self, client_index: int) -> 'FederatedData':
    """The population reduced to one client (local training alone)."""
    return dataclasses.replace(
        self, client_ids=(self.client_ids[client_index],),
        train_indices=(self.train_indices[client_index],),
        validation_indices=(self.validation_indices[client_index],))

  def to_client_data(self) -> tff.simulation.datasets.ClientData:
    """The training splits as a TFF `ClientData` of unbatched examples."""
    by_id = dict(zip(self.client_ids, self.train_indices))

    def dataset_for_client(client_id):
      return _examples_dataset(self.pool.take(by_id[client_id]))

    return tff.simulation.datasets.ClientData.from_clients_and_tf_fn(
        list(self.client_ids), dataset_for_client)


def epoch_order(num_examples: int, *, seed: int, round_num: int,
                client_index: int, epoch: int) -> np.ndarray:
  """The order of a client's examples in one local epoch of one round.

  Args:
    num_examples: the client's number of training examples n.
    seed: the run's seed.
    round_num: the round (1-based).
    client_index: the client's index in the population.
    epoch: the local epoch (0-based).

  Returns:
    A permutation of range(n) (int64), a pure function of the arguments.
  """
  rng = np.random.default_rng([seed, round_num, client_index, epoch])
  return rng.permutation(num_examples)


def _gathered_batches(examples: arrays.LabeledArrays, order: np.ndarray,
                      batch_size: int) -> tf.data.Dataset:
  """Batches `examples[order[i:i + batch_size]]` of `OrderedDict(x, y)`."""
  tensors = collections.OrderedDict(
      x=tf.constant(examples.x.astype(np.float32, copy=False)),
      y=tf.constant(examples.y.astype(np.int64, copy=False)))
  return tf.data.Dataset.from_tensor_slices(order.astype(np.int32)).batch(
      batch_size).map(lambda batch_indices: collections.OrderedDict(
          (key, tf.gather(value, batch_indices))
          for key, value in tensors.items()))


def _examples_dataset(examples: arrays.LabeledArrays) -> tf.data.Dataset:
  return tf.data.Dataset.from_tensor_slices(
      collections.OrderedDict(
          x=examples.x.astype(np.float32, copy=False),
          y=examples.y.astype(np.int64, copy=False)))


def build_federated_data(pool: arrays.LabeledArrays,
                         client_partition: Sequence[np.ndarray],
                         num_classes: int,
                         *,
                         validation_fraction: float,
                         seed: int,
                         client_ids: Sequence[str] | None = None
                        ) -> FederatedData:
  """Splits each client's examples into training and validation.

  Args:
    pool: the training pool.
    client_partition: per client, indices into `pool`.
    num_classes: number of classes.
    validation_fraction: share of each client's examples (per class) held out
      for local validation, in [0, 1).
    seed: seeds the per-client splits.
    client_ids: optional names (default '0', '1', ...).

  Returns:
    A `FederatedData`.
  """
  if client_ids is None:
    client_ids = [str(k) for k in range(len(client_partition))]
  train, validation = [], []
  for k, indices in enumerate(client_partition):
    client_train, client_validation = partition_lib.train_validation_split(
        np.asarray(indices), pool.y, validation_fraction,
        seed=derived_seed(seed, k))
    train.append(client_train)
    validation.append(client_validation)
  return FederatedData(pool=pool, client_ids=tuple(client_ids),
                       train_indices=tuple(train),
                       validation_indices=tuple(validation),
                       num_classes=num_classes)
