"""In-memory labelled examples, the currency between data-layer stages.

Every source returns a `SourceData`; profiles and partitions work on label
arrays and return index arrays into `SourceData.train`, so no stage copies
images until the federated datasets are built.

Conventions (all sources): `x` is float32 of shape [N, 28, 28, 1] (or the
source's own image shape) with values in [0, 1] and 0.0 the background (the
MNIST convention; LEAF/TFF EMNIST, whose background is 1.0, are inverted on
load); `y` is int64 of shape [N] with values in [0, num_classes).
"""

import dataclasses
from typing import Optional

import numpy as np


@dataclasses.dataclass(frozen=True)
class LabeledArrays:
  """Examples `x` with integer labels `y`, aligned on the first axis."""
  x: np.ndarray
  y: np.ndarray

  def __post_init__(self):
    if len(self.x) != len(self.y):
      raise ValueError(
          f'x and y differ in length: {len(self.x)} vs {len(self.y)}.')

  def __len__(self) -> int:
    return len(self.y)

  def take(self, indices: np.ndarray) -> 'LabeledArrays':
    """The examples at `indices`, in that order."""
    indices = np.asarray(indices, dtype=np.int64)
    return LabeledArrays(x=self.x[indices], y=self.y[indices])


@dataclasses.dataclass(frozen=True)
class SourceData:
  """What a source delivers.

  Attributes:
    train: the training pool.
    test: the held-out test set (balanced where the source allows).
    num_classes: number of classes C; labels lie in [0, C).
    train_writer_ids: for sources with natural clients (LEAF, TFF EMNIST), the
      writer id of each training example (str array aligned with `train`);
      None for pooled sources (MNIST, CIFAR).
    class_names: optional display names, one per class.
  """
  train: LabeledArrays
  test: LabeledArrays
  num_classes: int
  train_writer_ids: Optional[np.ndarray] = None
  class_names: Optional[tuple[str, ...]] = None


def first_classes(source: SourceData, num_classes: int) -> SourceData:
  """`source` restricted to its classes [0, num_classes), train and test.

  FEMNIST's labels 0-9 are its digits: 000 runs "Sampled-FEMNIST" with a
  10-unit output layer (sec. 4.2), i.e. the digits alone.
  """
  keep_train = np.flatnonzero(source.train.y < num_classes)
  keep_test = np.flatnonzero(source.test.y < num_classes)
  return SourceData(
      train=source.train.take(keep_train), test=source.test.take(keep_test),
      num_classes=num_classes,
      train_writer_ids=(None if source.train_writer_ids is None else
                        source.train_writer_ids[keep_train]),
      class_names=(None if source.class_names is None else
                   source.class_names[:num_classes]))
