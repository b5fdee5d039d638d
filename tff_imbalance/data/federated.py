"""Partitioned arrays -> TFF ClientData and per-round client datasets.

A `FederatedData` holds the training pool once and, per client, index arrays
into it for a training and a validation split; it never copies images until a
round asks for a client's dataset. Local shuffling is seeded by
(seed, round, client) so that a run is reproducible and every round still sees
a fresh order.
"""

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
# `FederatedData.round_inputs`).
CLIENT_INDEX = 'client_index'


def derived_seed(*parts: int) -> int:
  """A 31-bit seed for TF ops, derived from integers (seed, round, client...)."""
  return int(np.random.SeedSequence(list(parts)).generate_state(1)[0] >> 1)


@dataclasses.dataclass(frozen=True)
class FederatedData:
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

  def train_labels(self) -> np.ndarray:
    """Labels of every client's training examples, concatenated."""
    return self.pool.y[np.concatenate(self.train_indices)]

  def client_train_partition(self) -> list[np.ndarray]:
    """Per-client training indices into `train_labels()`-ordered positions."""
    sizes = np.cumsum([0] + [len(i) for i in self.train_indices])
    return [np.arange(a, b) for a, b in zip(sizes[:-1], sizes[1:])]

  def train_dataset(self, client_index: int, *, round_num: int,
                    local_epochs: int, batch_size: int,
                    seed: int) -> tf.data.Dataset:
    """The batched local-training dataset of one client for one round."""
    examples = self.pool.take(self.train_indices[client_index])
    dataset = _examples_dataset(examples)
    dataset = dataset.shuffle(
        len(examples), seed=derived_seed(seed, round_num, client_index),
        reshuffle_each_iteration=True)
    return dataset.repeat(local_epochs).batch(batch_size)

  def round_inputs(self, client_indices: Sequence[int], *, round_num: int,
                   local_epochs: int, batch_size: int, seed: int,
                   with_validation: bool,
                   with_client_index: bool = False) -> list:
    """What `process.next` takes for a cohort, in cohort order.

    Plain training datasets; or per client `OrderedDict(train, ...)` with,
    `with_validation`, `validation` and `slot` (its position in the cohort:
    the shared client work's per-slot validation reports, used by psi
    selection) and, `with_client_index`, `client_index` (its index in the
    population, for per-client server state such as CLIMB's duals); both
    indices are one-element int32 datasets.
    """
    inputs = []
    for slot, k in enumerate(client_indices):
      train = self.train_dataset(int(k), round_num=round_num,
                                 local_epochs=local_epochs,
                                 batch_size=batch_size, seed=seed)
      if not (with_validation or with_client_index):
        inputs.append(train)
        continue
      client_input = collections.OrderedDict(train=train)
      if with_validation:
        client_input['validation'] = self.validation_dataset(int(k),
                                                             batch_size)
        client_input['slot'] = tf.data.Dataset.from_tensors(np.int32(slot))
      if with_client_index:
        client_input[CLIENT_INDEX] = tf.data.Dataset.from_tensors(np.int32(k))
      inputs.append(client_input)
    return inputs

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

  def validation_dataset(self, client_index: int,
                         batch_size: int) -> tf.data.Dataset:
    """The batched validation dataset of one client."""
    examples = self.pool.take(self.validation_indices[client_index])
    return _examples_dataset(examples).batch(batch_size)

  def to_client_data(self) -> tff.simulation.datasets.ClientData:
    """The training splits as a TFF `ClientData` of unbatched examples."""
    by_id = dict(zip(self.client_ids, self.train_indices))

    def dataset_for_client(client_id):
      return _examples_dataset(self.pool.take(by_id[client_id]))

    return tff.simulation.datasets.ClientData.from_clients_and_tf_fn(
        list(self.client_ids), dataset_for_client)


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
