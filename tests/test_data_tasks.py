"""The data flags of the task programs end to end: idx files, the n_0 long
tail, the per-class Dirichlet split, the partition figure, and the FEMNIST
sample shipped in the package.

Each case runs `python -m tasks.<task>` in a subprocess, as a user does.
"""

import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--model=mlp', '--rounds=1', '--eval_every=1', '--local_epochs=1',
        '--batch_size=16', '--quiet']
# Training examples per digit of the tiny idx set: class 0 has fewer than
# n_0 = 600 / 10 = 60, so the profile caps it.
_TRAIN_COUNTS = [50, 70, 60, 60, 60, 60, 60, 60, 60, 60]


def _run(task, *flags, timeout=300):
  return subprocess.run(
      [sys.executable, '-m', f'tasks.{task}', *flags], cwd=ROOT,
      capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _write_idx(path, magic, array):
  header = magic.to_bytes(4, 'big') + b''.join(
      int(n).to_bytes(4, 'big') for n in array.shape)
  with open(path, 'wb') as f:
    f.write(header + array.astype(np.uint8).tobytes())


def _write_idx_dir(root):
  """Uncompressed MNIST-layout files: digit d drawn as a bright row d."""
  os.makedirs(root)
  rng = np.random.default_rng(0)
  for prefix, counts in (('train', _TRAIN_COUNTS), ('t10k', [5] * 10)):
    labels = rng.permutation(np.repeat(np.arange(10), counts))
    images = rng.integers(0, 40, (len(labels), 28, 28))
    images[np.arange(len(labels)), labels] = 255
    _write_idx(os.path.join(root, f'{prefix}-images-idx3-ubyte'), 0x803,
               images)
    _write_idx(os.path.join(root, f'{prefix}-labels-idx1-ubyte'), 0x801,
               labels)


def test_mnist_lt_idx_n0_profile_per_class_split_and_partition_figure(
    tmp_path):
  _write_idx_dir(tmp_path / 'idx')
  out = tmp_path / 'run'
  result = _run('mnist_lt', *TINY, '--source=idx',
                f'--data_dir={tmp_path / "idx"}', '--profile=longtail_n0',
                '--imbalance_ratio=10', '--aux_per_class=0',
                '--partition=dirichlet_per_class', '--num_clients=4',
                '--clients_per_round=4', f'--output_dir={out}')
  assert result.returncode == 0, result.stderr
  summary = json.loads((out / 'summary.json').read_text())
  # n_c = min(N_c, int(60 * 10^(-c/9))): 60 capped to 50, 46.4, 35.9, 27.8,
  # 21.5, 16.7, 12.9, 10.0, 7.7, 6.0.
  assert summary['data']['profiled_class_counts'] == [50, 46, 35, 27, 21, 16,
                                                      12, 10, 7, 6]
  assert summary['data']['profiled_examples'] == 230
  split = np.array(summary['data']['client_class_counts'])
  assert split.shape == (4, 10) and split.sum() == 230
  assert summary['data']['partition'] == 'dirichlet_per_class'
  assert (out / 'partition.png').stat().st_size > 0


def test_mnist_lt_idx_missing_file_is_one_line(tmp_path):
  _write_idx_dir(tmp_path / 'idx')
  os.remove(tmp_path / 'idx' / 't10k-labels-idx1-ubyte')
  result = _run('mnist_lt', *TINY, '--source=idx',
                f'--data_dir={tmp_path / "idx"}')
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr
  assert 't10k-labels-idx1-ubyte[.gz] is missing' in result.stderr
  result = _run('mnist_lt', *TINY, '--source=idx')
  assert result.returncode != 0
  assert '--data_dir is required with --source=idx' in result.stderr


def test_femnist_runs_on_the_shipped_sample_with_no_data_flag(tmp_path):
  out = tmp_path / 'run'
  result = _run('femnist', *TINY, '--algo=fedfocal', '--clients_per_round=2',
                f'--output_dir={out}')
  assert result.returncode == 0, result.stderr
  summary = json.loads((out / 'summary.json').read_text())
  assert summary['data']['source'] == 'leaf_sample'
  assert summary['data']['num_writers'] == 10
  assert len(summary['per_class_accuracy']) == 62
  assert (out / 'partition.png').exists()
