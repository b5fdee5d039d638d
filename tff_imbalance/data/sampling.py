"""Class-balanced resampling of a client's batched dataset, inside TF graphs.

BalanceFL (003 sec. 5.3.1, eq. 5 with gamma = 0) draws each training example
by first choosing one of the client's activated classes uniformly, then an
example of that class uniformly (with replacement, as the reference's
`WeightedRandomSampler` with weights 1/m_c). Here this happens inside the
client computation on the dataset it receives: the client's examples are read
once into tensors (the local data as given, never an over-sampled copy), the
draws are made as indices, and the result is a dataset of index batches
mapped to `gather`s, so the over-sampled data exist only one batch at a time.

A first version split the unbatched stream into one filtered, repeated stream
per class and mixed them with `tf.data.Dataset.sample_from_datasets`; every
stream re-read the client's whole dataset, and local training took 3-6x
FedAvg's time on MNIST-LT with an MLP. Indices cost one pass.
"""

import collections

import tensorflow as tf

# Larger than any client dataset: `batch` of this size collects all examples.
_ALL = 2**31 - 1


def balanced_indices(labels: tf.Tensor, label_counts: tf.Tensor,
                     num_samples: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Indices of a class-balanced sample (with replacement) of `labels`.

  Args:
    labels: [N] int64 labels.
    label_counts: [C] counts of each class in `labels`; classes with count 0
      are never drawn.
    num_samples: int64 scalar, the number of draws.
    seed: [2] int stateless seed.

  Returns:
    [num_samples] int32 indices into `labels` whose classes are i.i.d.
    uniform over the classes with a positive count, and each index uniform
    among the examples of its class.
  """
  counts = tf.cast(label_counts, tf.int32)
  num_samples = tf.cast(num_samples, tf.int32)
  present = tf.cast(counts > 0, tf.float32)
  class_seed, example_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))
  classes = tf.random.stateless_categorical(
      tf.math.log(present)[tf.newaxis, :], num_samples, class_seed,
      dtype=tf.int32)[0]
  # Examples grouped by class: class c occupies [start_c, start_c + m_c).
  order = tf.argsort(tf.cast(labels, tf.int32), stable=True)
  starts = tf.cumsum(counts, exclusive=True)
  offsets = tf.random.stateless_uniform(
      [num_samples], example_seed, minval=0, maxval=_ALL,
      dtype=tf.int32) % tf.gather(tf.maximum(counts, 1), classes)
  return tf.gather(order, tf.gather(starts, classes) + offsets)


def class_balanced(dataset: tf.data.Dataset, label_counts: tf.Tensor,
                   batch_size: int, seed: tf.Tensor) -> tf.data.Dataset:
  """Resamples `dataset` so that every present class is drawn equally often.

  Args:
    dataset: batched `OrderedDict(x, y)` examples (y int64 labels).
    label_counts: [C] int counts of each class in `dataset`; its sum is the
      number of examples drawn, and classes with count 0 are never drawn.
    batch_size: the batch size of the result.
    seed: [2] int stateless seed (a tensor, so that it can change per round
      and client inside one traced computation).

  Returns:
    A dataset of `sum(label_counts)` examples in batches of `batch_size`,
    whose labels are i.i.d. uniform over the classes with a positive count.
  """
  # A reduce rather than get_single_element: an empty client gets [0, ...]
  # tensors (and an empty result) instead of an error.
  empty = tf.nest.map_structure(
      lambda spec: tf.zeros([0, *spec.shape[1:]], spec.dtype),
      dataset.element_spec)
  examples = dataset.unbatch().batch(_ALL).reduce(empty, lambda _, all_: all_)
  total = tf.reduce_sum(tf.cast(label_counts, tf.int64))
  indices = balanced_indices(examples['y'], label_counts, total, seed)
  return tf.data.Dataset.from_tensor_slices(indices).batch(batch_size).map(
      lambda batch_indices: collections.OrderedDict(
          (key, tf.gather(value, batch_indices))
          for key, value in examples.items()))
