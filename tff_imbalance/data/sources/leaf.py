"""FEMNIST from LEAF's JSON files, grouped by writer.

LEAF (Caldas et al., 2018, https://arxiv.org/abs/1812.01097) writes each split
as JSON files of the form

  {"users": [uid, ...], "num_samples": [n, ...],
   "user_data": {uid: {"x": [[784 floats], ...], "y": [int, ...]}}}

with x the row-major 28x28 image as pixel/255 and 1.0 the white background.
Other keys (e.g. `hierarchies`) are ignored. `data_dir` holds a `train/` and a
`test/` folder of such files; a writer's test examples sit in `test/`.
Test examples of writers absent from `train/` are dropped with a warning.

The module also defines the EMNIST label names and the balanced per-class
subset used by every source that offers a balanced test set.
"""

import json
import os
import string
from typing import Any, Optional

from absl import logging
import numpy as np

from tff_imbalance import errors
from tff_imbalance.data import arrays

NUM_FEMNIST_CLASSES = 62
# LEAF's and TFF's EMNIST "by class" order: digits, then 'A'-'Z', then 'a'-'z'.
EMNIST_CLASS_NAMES = tuple(
    string.digits + string.ascii_uppercase + string.ascii_lowercase)
_IMAGE_SIZE = 28 * 28


def balanced_subset_indices(labels: np.ndarray, per_class: int,
                            seed: int) -> np.ndarray:
  """Indices of at most `per_class` examples of each class, drawn by `seed`.

  Classes with fewer examples contribute all they have. The draw depends only
  on `labels`, `per_class` and `seed`, so a run is reproducible.

  Args:
    labels: int array [N] of class labels.
    per_class: the most examples to keep per class (>= 1).
    seed: seed of the draw.

  Returns:
    Sorted int64 indices into `labels`.
  """
  rng = np.random.default_rng(seed)
  chosen = []
  for label in np.unique(labels):
    members = np.flatnonzero(labels == label)
    chosen.append(rng.permutation(members)[:per_class])
  if not chosen:
    return np.zeros([0], dtype=np.int64)
  return np.sort(np.concatenate(chosen)).astype(np.int64)


def check_max_test_per_class(max_test_per_class: Optional[int]) -> None:
  """Raises `UserInputError` unless the value is None or a positive int."""
  if max_test_per_class is not None and (
      isinstance(max_test_per_class, bool)
      or not isinstance(max_test_per_class, (int, np.integer))
      or max_test_per_class < 1):
    raise errors.UserInputError(
        f'max_test_per_class={max_test_per_class!r} is invalid: pass a '
        'positive integer, or None to keep the whole test set.')


def load_leaf_femnist(data_dir: str,
                      max_test_per_class: Optional[int] = None,
                      seed: int = 0) -> arrays.SourceData:
  """Loads LEAF FEMNIST from `data_dir/train/*.json` and `data_dir/test/*.json`.

  Pixels are inverted on load (LEAF's 1.0 background becomes 0.0, the
  project-wide convention) and reshaped to [N, 28, 28, 1] float32.

  Args:
    data_dir: folder holding LEAF's `train/` and `test/` subfolders.
    max_test_per_class: if set, keep a balanced test subset of at most this
      many examples per class (RedGrape uses 200); None keeps all of them.
    seed: seed of the balanced test subset.

  Returns:
    `SourceData` with 62 classes; `train_writer_ids` gives each training
    example's LEAF user id; the test set pools the test examples of every
    writer that also has training examples (others are dropped, with a
    warning).

  Raises:
    errors.UserInputError: the folder, a subfolder or the JSON files are
      missing, or a file is not in LEAF's layout.
  """
  check_max_test_per_class(max_test_per_class)
  if not os.path.isdir(data_dir):
    raise errors.UserInputError(
        f'LEAF data directory {data_dir!r} does not exist: pass the folder '
        'that holds LEAF\'s train/ and test/ subfolders of JSON files.')
  train_x, train_y, train_writers = _read_split(data_dir, 'train')
  test_x, test_y, test_writers = _read_split(data_dir, 'test')
  test = arrays.LabeledArrays(x=test_x, y=test_y).take(
      _paired_test_indices(data_dir, train_writers, test_writers))
  if max_test_per_class is not None:
    test = test.take(balanced_subset_indices(test.y, max_test_per_class, seed))
  return arrays.SourceData(
      train=arrays.LabeledArrays(x=train_x, y=train_y),
      test=test,
      num_classes=NUM_FEMNIST_CLASSES,
      train_writer_ids=train_writers,
      class_names=EMNIST_CLASS_NAMES)


def _paired_test_indices(data_dir: str, train_writers: np.ndarray,
                         test_writers: np.ndarray) -> np.ndarray:
  """Positions of the test examples whose writer also has training examples.

  LEAF splits each writer 90/10, so every test writer should appear in
  train/; a directory assembled from unpaired files (e.g. a copy that kept
  only some of LEAF's files) breaks that. Test examples of writers that never
  train are dropped, with a warning that says what was dropped, so that the
  test set stays the held-out part of the training writers.
  """
  in_train = np.isin(test_writers, train_writers)
  if not in_train.all():
    only_test = np.unique(test_writers[~in_train])
    shown = ', '.join(only_test[:5]) + (', ...' if only_test.size > 5 else '')
    logging.warning(
        'LEAF directory %s: dropped %d test examples of %d writer(s) that '
        'have no training examples (%s): their train/ files are missing.',
        data_dir, int((~in_train).sum()), only_test.size, shown)
  return np.flatnonzero(in_train)


def _read_split(data_dir: str,
                split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Reads every JSON file of one split; returns images, labels, writer ids."""
  split_dir = os.path.join(data_dir, split)
  if not os.path.isdir(split_dir):
    raise errors.UserInputError(
        f'LEAF data directory {data_dir!r} has no {split}/ subfolder: pass '
        'the folder that holds both train/ and test/ (LEAF\'s '
        'data/<dataset>/data layout).')
  paths = sorted(
      os.path.join(split_dir, name)
      for name in os.listdir(split_dir)
      if name.endswith('.json'))
  if not paths:
    raise errors.UserInputError(
        f'LEAF folder {split_dir!r} holds no .json files: run LEAF\'s '
        'preprocessing (or copy its output) so that it contains them.')
  xs, ys, writers, counts = [], [], [], []
  for path in paths:
    for writer, x, y in _read_file(path):
      xs.append(x)
      ys.append(y)
      writers.append(writer)
      counts.append(len(y))
  x = np.concatenate(xs) if xs else np.zeros([0, _IMAGE_SIZE], np.float32)
  y = np.concatenate(ys) if ys else np.zeros([0], np.int64)
  if len(x) and (x.min() < 0.0 or x.max() > 1.0):
    raise errors.UserInputError(
        f'LEAF files in {split_dir!r} hold pixel values outside [0, 1] '
        f'(min {x.min()}, max {x.max()}): LEAF stores pixel/255; regenerate '
        'the files with LEAF\'s preprocessing.')
  # LEAF: 1.0 = background; the project's convention is 0.0 = background.
  x = (1.0 - x).reshape([-1, 28, 28, 1])
  writer_ids = np.repeat(np.asarray(writers, dtype=str), counts)
  return x, y, writer_ids


def _read_file(path: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
  """Parses one LEAF JSON file into (writer, x [n, 784], y [n]) triples."""
  try:
    with open(path, 'rb') as f:
      content = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise errors.UserInputError(
        f'LEAF file {path!r} is not valid JSON ({e}): replace it with an '
        'intact copy of LEAF\'s output.') from None
  except OSError as e:
    raise errors.UserInputError(
        f'LEAF file {path!r} cannot be read ({e.strerror}): check its '
        'permissions.') from None
  if not isinstance(content, dict):
    raise errors.UserInputError(
        f'LEAF file {path!r} holds a {type(content).__name__}, not a JSON '
        'object with "users" and "user_data": use LEAF\'s output files.')
  missing = [key for key in ('users', 'user_data') if key not in content]
  if missing:
    raise errors.UserInputError(
        f'LEAF file {path!r} lacks the key(s) {", ".join(missing)}: each file '
        'needs "users", "num_samples" and "user_data" as LEAF writes them.')
  users, user_data = content['users'], content['user_data']
  num_samples = content.get('num_samples')
  if not isinstance(users, list) or not isinstance(user_data, dict):
    raise errors.UserInputError(
        f'LEAF file {path!r}: "users" must be a list and "user_data" an '
        'object mapping user id to {"x", "y"}: use LEAF\'s output files.')
  if num_samples is not None and (not isinstance(num_samples, list) or
                                  len(num_samples) != len(users)):
    raise errors.UserInputError(
        f'LEAF file {path!r}: "num_samples" must list one count per user '
        f'({len(users)} users): the file is truncated or hand-edited.')
  result = []
  for i, writer in enumerate(users):
    x, y = _user_arrays(path, str(writer), user_data.get(writer))
    if num_samples is not None and num_samples[i] != len(y):
      raise errors.UserInputError(
          f'LEAF file {path!r}: user {writer!r} has {len(y)} examples but '
          f'"num_samples" says {num_samples[i]}: the file is truncated or '
          'hand-edited.')
    result.append((str(writer), x, y))
  return result


def _user_arrays(path: str, writer: str,
                 entry: Any) -> tuple[np.ndarray, np.ndarray]:
  """Validates one user's {"x", "y"} entry; returns x [n, 784], y [n]."""
  if not isinstance(entry, dict) or 'x' not in entry or 'y' not in entry:
    raise errors.UserInputError(
        f'LEAF file {path!r}: user {writer!r} listed in "users" has no '
        '{"x": ..., "y": ...} entry in "user_data": use LEAF\'s output files.')
  try:
    # One conversion per user: a Python loop over rows would dominate the
    # load time of LEAF's 4 MB files.
    x = np.asarray(entry['x'], dtype=np.float32)
  except (ValueError, TypeError):
    x = None
  if x is not None and x.size == 0:
    x = x.reshape([0, _IMAGE_SIZE])
  if x is None or x.ndim != 2 or x.shape[1] != _IMAGE_SIZE:
    raise errors.UserInputError(
        f'LEAF file {path!r}: user {writer!r} has "x" rows that are not '
        f'{_IMAGE_SIZE} numbers long (28x28 images): FEMNIST files only.')
  y = np.asarray(entry['y'])
  if y.size == 0:
    y = y.astype(np.int64)
  if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
    raise errors.UserInputError(
        f'LEAF file {path!r}: user {writer!r} has "y" that is not a list of '
        'integer labels: FEMNIST files only.')
  if len(y) != len(x):
    raise errors.UserInputError(
        f'LEAF file {path!r}: user {writer!r} has {len(x)} images but '
        f'{len(y)} labels: the file is truncated or hand-edited.')
  if len(y) and (y.min() < 0 or y.max() >= NUM_FEMNIST_CLASSES):
    raise errors.UserInputError(
        f'LEAF file {path!r}: user {writer!r} has labels outside '
        f'[0, {NUM_FEMNIST_CLASSES}) (min {y.min()}, max {y.max()}): '
        'FEMNIST has 62 classes; is this another LEAF dataset?')
  return x, y.astype(np.int64)
