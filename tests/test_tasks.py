"""The task programs end to end, as a user runs them, and their bad inputs.

Each case runs `python -m tasks.<task>` in a subprocess: that is the only way
to see what a user sees (one clear line, no traceback, a clean exit with no
TFF worker left holding the pipe).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import concurrent_runs
from tff_imbalance.data.sources import registry as sources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--model=mlp', '--rounds=2', '--eval_every=1', '--local_epochs=1',
        '--batch_size=16']


def _command(task, *flags):
  return [sys.executable, '-m', f'tasks.{task}', *flags]


def _run(task, *flags, timeout=240):
  return subprocess.run(
      _command(task, *flags), cwd=ROOT, capture_output=True, text=True,
      timeout=timeout, stdin=subprocess.DEVNULL)


def _write_leaf(root, writers, rng, bad_json=False):
  for split in ('train', 'test'):
    os.makedirs(os.path.join(root, split), exist_ok=True)
    users = {}
    for w in writers:
      n = 12 if split == 'train' else 4
      users[w] = dict(x=rng.random((n, 784)).round(3).tolist(),
                      y=rng.integers(0, 62, n).tolist())
    content = json.dumps(dict(users=list(users), num_samples=[n] * len(users),
                              user_data=users))
    if bad_json and split == 'train':
      content = content[:-10]
    with open(os.path.join(root, split, f'{split}.json'), 'w') as f:
      f.write(content)


def test_mnist_lt_runs_and_writes_every_metric(tmp_path):
  out = tmp_path / 'run'
  result = _run('mnist_lt', *TINY, '--num_clients=5', '--clients_per_round=3',
                '--imbalance_ratio=10', f'--output_dir={out}')
  assert result.returncode == 0, result.stderr
  assert 'Traceback' not in result.stderr
  summary = json.loads((out / 'summary.json').read_text())
  for key in ('accuracy', 'balanced_accuracy', 'per_class_accuracy',
              'many_shot_accuracy', 'medium_shot_accuracy',
              'few_shot_accuracy', 'minority_accuracy', 'macro_f1', 'auc'):
    assert key in summary
  assert len(summary['per_class_accuracy']) == 10
  rows = (out / 'metrics.csv').read_text().strip().splitlines()
  assert len(rows) == 3  # header + 2 rounds
  assert 'balanced' in result.stdout  # the per-class table's summary line
  assert (out / 'flags.txt').exists()


def test_femnist_runs_on_a_tiny_leaf_directory(tmp_path):
  _write_leaf(tmp_path / 'leaf', ['w1', 'w2', 'w3'], np.random.default_rng(0))
  result = _run('femnist', *TINY, f'--data_dir={tmp_path / "leaf"}',
                '--algo=fedfocal', '--clients_per_round=2',
                f'--output_dir={tmp_path / "run"}')
  assert result.returncode == 0, result.stderr
  summary = json.loads((tmp_path / 'run' / 'summary.json').read_text())
  assert len(summary['per_class_accuracy']) == 62
  assert summary['data']['num_writers'] == 3


def test_local_training_task_reports_over_writers(tmp_path):
  """--algo=local: one model per writer, summarised over the writers."""
  _write_leaf(tmp_path / 'leaf', ['w1', 'w2', 'w3'], np.random.default_rng(1))
  result = _run('femnist', *TINY, f'--data_dir={tmp_path / "leaf"}',
                '--algo=local', f'--output_dir={tmp_path / "run"}')
  assert result.returncode == 0, result.stderr
  summary = json.loads((tmp_path / 'run' / 'summary.json').read_text())
  assert [c['client_id'] for c in summary['local_clients']] == ['w1', 'w2',
                                                                'w3']
  assert 'balanced_accuracy_std' in summary
  assert 'balanced' in result.stdout


_BAD_INPUTS = [
    ('mnist_lt', ['--algo=fedbogus'], '--algo'),
    ('mnist_lt', ['--imbalance_ratio=0.5'], '--imbalance_ratio'),
    ('mnist_lt', ['--dirichlet_alpha=0'], '--dirichlet_alpha'),
    ('mnist_lt', ['--num_clients=5', '--clients_per_round=6'],
     '--clients_per_round'),
    ('mnist_lt', ['--num_clients=100000', '--clients_per_round=2'],
     'more clients than examples'),
    ('femnist', ['--data_dir=/nonexistent/leaf'], '/nonexistent/leaf'),
    ('mnist_lt', ['--algo=fedfocal', '--psi=1.5'], '--psi'),
    ('mnist_lt', ['--loss=focal', '--focal_gamma=-1'], '--focal_gamma'),
    ('mnist_lt', ['--algo=climb', '--climb_dual_lr=0'], '--climb_dual_lr'),
    # Invalid values stop the run even where the flag does not apply.
    ('mnist_lt', ['--partition=dirichlet', '--tau=0'], '--tau'),
    ('mnist_lt', ['--algo=fedavg', '--psi=1.5'], '--psi'),
    ('mnist_lt', ['--algo=fedavg', '--validation_fraction=1'],
     '--validation_fraction'),
    # psi selection without validation data would silently sample uniformly.
    ('mnist_lt', ['--algo=fedfocal', '--validation_fraction=0'],
     '--validation_fraction=0'),
]


@pytest.fixture(scope='module')
def bad_input_results():
  """Every bad-input case's process, started together (`concurrent_runs`)."""
  return concurrent_runs.run_all(
      {(task, tuple(flags)): _command(task, *TINY, *flags)
       for task, flags, _ in _BAD_INPUTS}, cwd=ROOT, timeout=240)


@pytest.mark.parametrize('task, flags, expected', _BAD_INPUTS)
def test_bad_input_stops_with_one_clear_message(task, flags, expected,
                                                bad_input_results):
  result = bad_input_results[task, tuple(flags)]
  assert result.returncode != 0
  assert expected in result.stderr
  assert 'Traceback' not in result.stderr


def test_unused_flags_warn_and_no_validation_split_without_psi(tmp_path):
  """Flags that do not apply warn once each; FedAvg keeps all its data."""
  result = _run('mnist_lt', *TINY, '--rounds=1', '--algo=fedavg',
                '--profile=none', '--partition=iid', '--num_clients=4',
                '--clients_per_round=2', '--validation_fraction=0.5',
                '--tau=3', '--psi=0.5', '--climb_epsilon=0.2',
                '--focal_gamma=3', f'--output_dir={tmp_path / "run"}')
  assert result.returncode == 0, result.stderr
  warnings = [line for line in result.stderr.splitlines()
              if line.startswith('warning: ')]
  assert sorted(line.split()[1] for line in warnings) == [
      '--climb_epsilon', '--focal_gamma', '--psi', '--tau',
      '--validation_fraction']
  assert all(line.endswith('; ignored') for line in warnings)
  summary = json.loads((tmp_path / 'run' / 'summary.json').read_text())
  # No validation split carved: every non-auxiliary example trains.
  pool = sources.load_source('embedded_mnist').train
  assert sum(summary['train_class_counts']) == len(pool.y) - 32 * 10
  # flags.txt records every flag, defaults included; rerunning it warns about
  # the same five flags, not about every other method's defaults.
  rerun = _run('mnist_lt', f'--flagfile={tmp_path / "run" / "flags.txt"}',
               f'--output_dir={tmp_path / "rerun"}')
  assert rerun.returncode == 0, rerun.stderr
  assert [line for line in rerun.stderr.splitlines()
          if line.startswith('warning: ')] == warnings


def test_malformed_leaf_file_is_named(tmp_path):
  _write_leaf(tmp_path / 'leaf', ['w1'], np.random.default_rng(0),
              bad_json=True)
  result = _run('femnist', *TINY, f'--data_dir={tmp_path / "leaf"}')
  assert result.returncode != 0
  assert 'train.json' in result.stderr
  assert 'Traceback' not in result.stderr
