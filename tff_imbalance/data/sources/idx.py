"""MNIST-format datasets from their original idx files (`--source=idx`).

MNIST (LeCun et al., 1998), Fashion-MNIST and KMNIST ship as four files in
LeCun's idx format, each optionally gzip-compressed (`NAME` or `NAME.gz`):

  train-images-idx3-ubyte   train-labels-idx1-ubyte
  t10k-images-idx3-ubyte    t10k-labels-idx1-ubyte

An idx file is a big-endian header, then the data bytes: the magic number
0x00000803 (unsigned bytes, 3 dimensions) for images or 0x00000801 (1
dimension) for labels, one 4-byte size per dimension, then prod(sizes) bytes.
The training split is the pool every profile draws from; the test split is the
source's own (MNIST's t10k), the same for every seed.
"""

import gzip
import os
import string
import zlib

import numpy as np

from tff_imbalance import errors
from tff_imbalance.data import arrays

NUM_CLASSES = 10
TRAIN_IMAGES = 'train-images-idx3-ubyte'
TRAIN_LABELS = 'train-labels-idx1-ubyte'
TEST_IMAGES = 't10k-images-idx3-ubyte'
TEST_LABELS = 't10k-labels-idx1-ubyte'
# idx magic: two zero bytes, the type code 0x08 (unsigned byte), the rank.
_IMAGES_MAGIC = 0x00000803
_LABELS_MAGIC = 0x00000801
_IMAGE_SIDE = 28


def _find(data_dir: str, name: str) -> str:
  """The path of `name` or `name.gz` in `data_dir`; raises if neither exists."""
  for candidate in (name, name + '.gz'):
    path = os.path.join(data_dir, candidate)
    if os.path.isfile(path):
      return path
  raise errors.UserInputError(
      f'idx file {os.path.join(data_dir, name)}[.gz] is missing: --data_dir '
      f'must hold {TRAIN_IMAGES}, {TRAIN_LABELS}, {TEST_IMAGES} and '
      f'{TEST_LABELS} (each optionally .gz), as MNIST is distributed.')


def _read_bytes(path: str) -> bytes:
  """The (decompressed) content of one idx file."""
  try:
    if path.endswith('.gz'):
      with gzip.open(path, 'rb') as f:
        return f.read()
    with open(path, 'rb') as f:
      return f.read()
  except (OSError, EOFError, zlib.error) as e:
    # gzip raises EOFError on a cut-off stream, BadGzipFile (an OSError) on a
    # file that is not gzip at all.
    raise errors.UserInputError(
        f'idx file {path} cannot be read ({e}): replace it with an intact '
        'copy (check it with `gunzip -c FILE | md5sum`).') from None


def read_idx(path: str, magic: int) -> np.ndarray:
  """Parses one idx file of unsigned bytes with the expected magic number.

  Args:
    path: the file (gzip-compressed when its name ends in .gz).
    magic: 0x00000803 for images [N, rows, cols], 0x00000801 for labels [N].

  Returns:
    uint8 array of the shape the header states.

  Raises:
    errors.UserInputError: the file is unreadable, has another magic number,
      or holds fewer or more bytes than its header states.
  """
  content = _read_bytes(path)
  rank = magic & 0xFF
  header_size = 4 * (1 + rank)
  if len(content) < 4:
    raise errors.UserInputError(
        f'idx file {path} is truncated ({len(content)} bytes, not even a '
        'magic number): replace it with an intact copy.')
  found = int.from_bytes(content[:4], 'big')
  if found != magic:
    raise errors.UserInputError(
        f'idx file {path} has magic number 0x{found:08x}, expected '
        f'0x{magic:08x} ({"images" if rank == 3 else "labels"} of unsigned '
        'bytes): the file is not this idx kind (swapped names?) or is '
        'corrupt.')
  if len(content) < header_size:
    raise errors.UserInputError(
        f'idx file {path} is truncated inside its header ({len(content)} of '
        f'{header_size} bytes): replace it with an intact copy.')
  shape = tuple(int.from_bytes(content[4 * (1 + d):4 * (2 + d)], 'big')
                for d in range(rank))
  expected = header_size + int(np.prod(shape, dtype=np.int64))
  if len(content) != expected:
    state = 'truncated' if len(content) < expected else 'longer than stated'
    raise errors.UserInputError(
        f'idx file {path} is {state}: its header states shape {shape}, '
        f'{expected} bytes in all, but it holds {len(content)}: replace it '
        'with an intact copy.')
  return np.frombuffer(content, dtype=np.uint8,
                       offset=header_size).reshape(shape)


def _read_split(data_dir: str, images_name: str,
                labels_name: str) -> arrays.LabeledArrays:
  """Images and labels of one split, checked against each other."""
  images_path = _find(data_dir, images_name)
  labels_path = _find(data_dir, labels_name)
  images = read_idx(images_path, _IMAGES_MAGIC)
  labels = read_idx(labels_path, _LABELS_MAGIC)
  if images.shape[1:] != (_IMAGE_SIDE, _IMAGE_SIDE):
    raise errors.UserInputError(
        f'idx file {images_path} holds {images.shape[1]}x{images.shape[2]} '
        f'images, not {_IMAGE_SIDE}x{_IMAGE_SIDE}: only MNIST-format '
        'datasets (MNIST, Fashion-MNIST, KMNIST) are supported.')
  if len(labels) != len(images):
    raise errors.UserInputError(
        f'idx file {labels_path} holds {len(labels)} labels but '
        f'{images_path} holds {len(images)} images: the two files of a split '
        'must come from the same dataset and be complete.')
  if len(labels) and labels.max() >= NUM_CLASSES:
    raise errors.UserInputError(
        f'idx file {labels_path} holds label {int(labels.max())}, outside '
        f'[0, {NUM_CLASSES}): only 10-class MNIST-format datasets are '
        'supported.')
  # uint8 0..255 with 0 the background, as MNIST stores it: the project's
  # convention after /255.
  x = (images.astype(np.float32) / 255.0)[..., np.newaxis]
  return arrays.LabeledArrays(x=x, y=labels.astype(np.int64))


def load_idx(data_dir: str) -> arrays.SourceData:
  """Loads the training and test splits of an MNIST-format idx directory.

  Args:
    data_dir: folder holding the four idx files (each plain or .gz).

  Returns:
    `SourceData` with x float32 [N, 28, 28, 1] in [0, 1] (0.0 = background),
    y int64, 10 classes named '0'-'9', no writer ids; `test` is the source's
    own test split (t10k), whatever the seed.

  Raises:
    errors.UserInputError: `data_dir` is not a folder, or a file is missing,
      unreadable, truncated, of the wrong kind (magic number), not 28x28, or
      its labels do not match its images in number or range. The message
      names the file.
  """
  if not data_dir or not os.path.isdir(data_dir):
    raise errors.UserInputError(
        f'--data_dir={data_dir} is not a directory: pass the folder that '
        f'holds {TRAIN_IMAGES}[.gz] and the three other MNIST idx files.')
  return arrays.SourceData(
      train=_read_split(data_dir, TRAIN_IMAGES, TRAIN_LABELS),
      test=_read_split(data_dir, TEST_IMAGES, TEST_LABELS),
      num_classes=NUM_CLASSES,
      class_names=tuple(string.digits))
