"""Federated EMNIST through TFF's own loader, as numpy arrays with writer ids.

`tff.simulation.datasets.emnist.load_data(only_digits, cache_dir)` in TFF 0.87
reads `<cache_dir>/emnist_all.sqlite` and downloads it only when that file is
absent. The file holds two tables (see TFF's `sql_client_data_utils.py`):

  examples(split_name TEXT, client_id TEXT, serialized_example_proto BLOB)
  client_metadata(client_id TEXT, split_name TEXT, num_examples INTEGER)

with split names `all_train`, `all_test` (62 classes) and `digits_only_train`,
`digits_only_test` (the digit examples again, under their own split names).
Each proto is a `tf.train.Example` with features `pixels` (784 floats, read as
[28, 28], 1.0 = background) and `label` (int64). There is no network here, so
a missing file is reported before TFF is called rather than downloaded.
"""

import contextlib
import os
import pathlib
import sqlite3
from typing import Optional

import numpy as np
import tensorflow as tf

from tff_imbalance import compat
from tff_imbalance import errors
from tff_imbalance.data import arrays
from tff_imbalance.data.sources import leaf

tff = compat.tff

SQLITE_FILENAME = 'emnist_all.sqlite'
_REQUIRED_COLUMNS = {
    'examples': ('split_name', 'client_id', 'serialized_example_proto'),
    'client_metadata': ('client_id', 'split_name'),
}
# Examples per tf.data batch when draining all clients into numpy.
_BATCH_SIZE = 8192


def load_tff_emnist(cache_dir: str,
                    only_digits: bool,
                    max_clients: Optional[int] = None,
                    max_test_per_class: Optional[int] = None,
                    seed: int = 0) -> arrays.SourceData:
  """Loads TFF's federated EMNIST from `cache_dir` without any download.

  Args:
    cache_dir: folder holding `emnist_all.sqlite` (TFF's `cache_dir`).
    only_digits: True for the 10-class digits split, False for all 62 classes.
    max_clients: if set, keep only the first `max_clients` writers in sorted
      client-id order (train and test alike), to keep runs cheap.
    max_test_per_class: if set, keep a balanced test subset of at most this
      many examples per class; None keeps the pooled test set.
    seed: seed of the balanced test subset.

  Returns:
    `SourceData` with pixels inverted to 0.0 = background, [N, 28, 28, 1]
    float32; `train_writer_ids` are TFF's client ids; the test set pools the
    selected writers' test examples.

  Raises:
    errors.UserInputError: the sqlite file is missing or not in TFF's layout,
      or an argument is out of range.
  """
  leaf.check_max_test_per_class(max_test_per_class)
  if max_clients is not None and (isinstance(max_clients, bool) or
                                  not isinstance(max_clients, (int, np.integer))
                                  or max_clients < 1):
    raise errors.UserInputError(
        f'max_clients={max_clients!r} is invalid: pass a positive integer, or '
        'None for every writer.')
  path = os.path.join(cache_dir, SQLITE_FILENAME)
  if not os.path.isfile(path):
    # TFF would try to download here; this machine has no network.
    raise errors.UserInputError(
        f'TFF EMNIST file {path!r} not found: TFF\'s emnist.load_data reads '
        f'{SQLITE_FILENAME} from the cache dir and would download it. Run once '
        'with network access, or place emnist_all.sqlite in that folder.')
  prefix = 'digits_only' if only_digits else 'all'
  _check_database(path, (f'{prefix}_train', f'{prefix}_test'))
  train_data, test_data = tff.simulation.datasets.emnist.load_data(
      only_digits=only_digits, cache_dir=cache_dir)
  num_classes = 10 if only_digits else leaf.NUM_FEMNIST_CLASSES

  train_ids = sorted(train_data.client_ids)[:max_clients]
  test_ids = sorted(set(train_ids).intersection(test_data.client_ids))
  train_x, train_y, train_writers = _to_arrays(
      train_data, train_ids, num_classes, path, f'{prefix}_train')
  test_x, test_y, _ = _to_arrays(test_data, test_ids, num_classes, path,
                                 f'{prefix}_test')
  test = arrays.LabeledArrays(x=test_x, y=test_y)
  if max_test_per_class is not None:
    test = test.take(
        leaf.balanced_subset_indices(test_y, max_test_per_class, seed))
  return arrays.SourceData(
      train=arrays.LabeledArrays(x=train_x, y=train_y),
      test=test,
      num_classes=num_classes,
      train_writer_ids=train_writers,
      class_names=leaf.EMNIST_CLASS_NAMES[:num_classes])


def _check_database(path: str, split_names: tuple[str, ...]) -> None:
  """Raises `UserInputError` unless `path` is an sqlite in TFF's layout.

  TFF checks the tables too, but with a bare exception and after it has
  logged; this names the file and what is wrong with it.
  """
  uri = pathlib.Path(path).resolve().as_uri() + '?mode=ro'
  fix = ('replace it with TFF\'s emnist_all.sqlite (tables examples and '
         'client_metadata).')
  try:
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
      tables = {
          row[0] for row in connection.execute(
              "SELECT name FROM sqlite_master WHERE type = 'table';")
      }
      for table, required in _REQUIRED_COLUMNS.items():
        if table not in tables:
          raise errors.UserInputError(
              f'TFF EMNIST file {path!r} has no table {table!r}: {fix}')
        columns = {
            row[1] for row in connection.execute(f'PRAGMA table_info({table});')
        }
        missing = [c for c in required if c not in columns]
        if missing:
          raise errors.UserInputError(
              f'TFF EMNIST file {path!r}: table {table!r} lacks column(s) '
              f'{", ".join(missing)}: {fix}')
      for split_name in split_names:
        (count,) = connection.execute(
            'SELECT COUNT(*) FROM client_metadata WHERE split_name = ?;',
            (split_name,)).fetchone()
        if not count:
          raise errors.UserInputError(
              f'TFF EMNIST file {path!r} has no clients in split '
              f'{split_name!r}: {fix}')
  except sqlite3.DatabaseError as e:
    raise errors.UserInputError(
        f'TFF EMNIST file {path!r} is not a readable sqlite database ({e}): '
        f'{fix}') from None


def _to_arrays(client_data: tff.simulation.datasets.ClientData,
               client_ids: list[str], num_classes: int, path: str,
               split_name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Drains `client_ids` of `client_data` into (x, y, writer ids) arrays."""
  if not client_ids:
    raise errors.UserInputError(
        f'TFF EMNIST file {path!r} has no clients in split {split_name!r} '
        'among those selected: raise max_clients or use the full file.')

  def tagged_examples(client_id):
    return client_data.serializable_dataset_fn(client_id).map(
        lambda e: (client_id, e['label'], e['pixels']))

  # One tf.data pipeline over all clients (as TFF's own
  # create_tf_dataset_from_all_clients does) instead of one per client.
  dataset = tf.data.Dataset.from_tensor_slices(client_ids).flat_map(
      tagged_examples).batch(_BATCH_SIZE)
  writers, labels, pixels = [], [], []
  try:
    for writer, label, image in dataset.as_numpy_iterator():
      writers.append(writer)
      labels.append(label)
      pixels.append(image)
  except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
    raise errors.UserInputError(
        f'TFF EMNIST file {path!r}: split {split_name!r} holds examples that '
        'are not tf.train.Example protos with pixels [28, 28] float and '
        f'label int ({e.message.splitlines()[0]}): replace the file with '
        'TFF\'s emnist_all.sqlite.') from None
  if not labels:
    raise errors.UserInputError(
        f'TFF EMNIST file {path!r} has no examples in split {split_name!r} '
        'for the selected clients: replace it with TFF\'s emnist_all.sqlite.')
  y = np.concatenate(labels).astype(np.int64)
  if y.min() < 0 or y.max() >= num_classes:
    raise errors.UserInputError(
        f'TFF EMNIST file {path!r}: split {split_name!r} has labels outside '
        f'[0, {num_classes}) (min {y.min()}, max {y.max()}): replace it with '
        'TFF\'s emnist_all.sqlite.')
  # TFF EMNIST: 1.0 = background; the project's convention is 0.0.
  x = (1.0 - np.concatenate(pixels)).astype(np.float32)[..., np.newaxis]
  # tf.data hands strings back as an object array of bytes.
  writer_ids = np.char.decode(
      np.concatenate(writers).astype(np.bytes_), 'utf-8')
  return x, y, writer_ids
