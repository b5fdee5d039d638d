"""MNIST, CIFAR-10 and CIFAR-100 from a prepared TensorFlow Datasets folder.

TFDS prepares a dataset once (`tfds build NAME --data_dir=DIR`, which needs the
network) and later reads it from `DIR/NAME/VERSION/`. This loader reads only;
`download=True` lets TFDS fetch and prepare it first where a network exists.
"""

from typing import Optional

import numpy as np
import tensorflow_datasets as tfds

from tff_imbalance import errors
from tff_imbalance.data import arrays

# Image shape of each supported dataset, as TFDS stores it.
IMAGE_SHAPES = {
    'mnist': (28, 28, 1),
    'cifar10': (32, 32, 3),
    'cifar100': (32, 32, 3),
}


def load_tfds(name: str,
              data_dir: Optional[str],
              download: bool = False) -> arrays.SourceData:
  """Loads the train and test splits of a TFDS image dataset into memory.

  Args:
    name: one of 'mnist', 'cifar10', 'cifar100'.
    data_dir: TFDS data folder (`--tfds_data_dir`); None means TFDS's default
      (~/tensorflow_datasets).
    download: let TFDS download and prepare the dataset when it is missing
      (needs network access); False only reads what is already prepared.

  Returns:
    `SourceData` with x float32 in [0, 1] of shape [N, 28, 28, 1] (MNIST) or
    [N, 32, 32, 3] (CIFAR), y int64, the source's class names, and no writer
    ids.

  Raises:
    errors.UserInputError: unknown `name`, or the dataset is not prepared in
      `data_dir` and `download` is False.
  """
  if name not in IMAGE_SHAPES:
    raise errors.UserInputError(
        f'tfds dataset {name!r} is not supported: use one of '
        f'{", ".join(sorted(IMAGE_SHAPES))}.')
  builder = tfds.builder(name, data_dir=data_dir)
  if not builder.is_prepared():
    if not download:
      where = (f'--tfds_data_dir={data_dir}' if data_dir else
               'TFDS\'s default folder (no --tfds_data_dir given)')
      raise errors.UserInputError(
          f'tfds dataset {name!r} is not prepared in {where}: run `tfds build '
          f'{name} --data_dir=DIR` on a machine with network access, copy DIR '
          'here and pass --tfds_data_dir=DIR (or allow downloading).')
    builder.download_and_prepare()
  splits = tfds.as_numpy(
      builder.as_dataset(
          split=['train', 'test'], batch_size=-1, as_supervised=True))
  train, test = (_to_labeled_arrays(x, y, name) for x, y in splits)
  label_feature = builder.info.features['label']
  return arrays.SourceData(
      train=train,
      test=test,
      num_classes=label_feature.num_classes,
      class_names=tuple(label_feature.names))


def _to_labeled_arrays(images: np.ndarray, labels: np.ndarray,
                       name: str) -> arrays.LabeledArrays:
  """uint8 images in [0, 255] -> float32 in [0, 1]; labels -> int64."""
  x = images.astype(np.float32) / 255.0
  if x.shape[1:] != IMAGE_SHAPES[name]:
    raise errors.UserInputError(
        f'tfds dataset {name!r} has images of shape {x.shape[1:]}, expected '
        f'{IMAGE_SHAPES[name]}: rebuild it with `tfds build {name}`.')
  return arrays.LabeledArrays(x=x, y=labels.astype(np.int64))
