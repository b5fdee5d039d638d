"""A task run as a user runs it: killed, resumed, repeated, and refused.

Each case runs `python -m tasks.mnist_lt` in a subprocess on a tiny
configuration. The reference run is made once per module and shared; the tests
that use it only read its directory.
"""

import csv
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--model=mlp', '--num_clients=5', '--clients_per_round=3',
        '--imbalance_ratio=10', '--rounds=6', '--checkpoint_every=1',
        '--eval_every=3', '--batch_size=16']
KILL_AFTER_ROUND = 3


def _command(*flags):
  return [sys.executable, '-m', 'tasks.mnist_lt', *TINY, *flags]


def _run(*flags, timeout=240):
  return subprocess.run(_command(*flags), cwd=ROOT, capture_output=True,
                        text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _rows(run_dir):
  with open(os.path.join(run_dir, 'metrics.csv'), newline='') as f:
    rows = list(csv.DictReader(f))
  for row in rows:
    del row['round_seconds']  # Wall time is the one thing allowed to differ.
  return rows


def _weights(run_dir):
  with np.load(os.path.join(run_dir, 'final_weights.npz')) as f:
    return {name: f[name] for name in f.files}


def _summary(run_dir):
  with open(os.path.join(run_dir, 'summary.json')) as f:
    return json.load(f)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """An uninterrupted run's directory."""
  run_dir = tmp_path_factory.mktemp('reference') / 'run'
  result = _run(f'--output_dir={run_dir}')
  assert result.returncode == 0, result.stderr
  return run_dir


def test_output_dir_holds_every_result(reference):
  names = set(os.listdir(reference))
  assert {'metrics.csv', 'summary.json', 'flags.txt', 'final_weights.npz',
          'curves.png', 'per_class.png', 'tensorboard',
          'checkpoints'} <= names
  assert glob.glob(str(reference / 'tensorboard' / 'events.out.tfevents.*'))
  assert [r['round'] for r in _rows(reference)] == [str(r) for r in range(1, 7)]
  flags_text = (reference / 'flags.txt').read_text()
  assert flags_text.startswith('# python -m tasks.mnist_lt')
  assert '--imbalance_ratio=10.0' in flags_text
  assert not [n for n in names if n.endswith('.tmp')]


def test_same_flags_give_identical_results(reference, tmp_path):
  result = _run(f'--output_dir={tmp_path}')
  assert result.returncode == 0, result.stderr
  assert _rows(tmp_path) == _rows(reference)
  assert _summary(tmp_path) == _summary(reference)
  for name, value in _weights(reference).items():
    np.testing.assert_array_equal(_weights(tmp_path)[name], value)


def _children(pid):
  children = []
  for path in glob.glob(f'/proc/{pid}/task/*/children'):
    with open(path) as f:
      children += [int(c) for c in f.read().split()]
  return children


def _checkpointed_rounds(run_dir):
  prefix = 'program_state_'
  try:
    names = os.listdir(run_dir / 'checkpoints')
  except FileNotFoundError:
    return []
  return [int(n[len(prefix):]) for n in names
          if n.startswith(prefix) and n[len(prefix):].isdigit()]


def test_resume_after_sigkill_reproduces_the_uninterrupted_run(reference,
                                                               tmp_path):
  run_dir = tmp_path / 'run'
  with open(tmp_path / 'killed.log', 'w') as log:
    process = subprocess.Popen(_command(f'--output_dir={run_dir}'), cwd=ROOT,
                               stdout=log, stderr=log,
                               stdin=subprocess.DEVNULL)
    try:
      deadline = time.monotonic() + 180
      while max(_checkpointed_rounds(run_dir), default=0) < KILL_AFTER_ROUND:
        assert process.poll() is None, 'the run ended before it was killed'
        assert time.monotonic() < deadline
        time.sleep(0.01)
      # TFF's worker outlives a SIGKILLed parent; stop it too.
      workers = _children(process.pid)
      os.kill(process.pid, signal.SIGKILL)
      process.wait()
    finally:
      if process.poll() is None:
        process.kill()
        process.wait()
    for pid in workers:
      try:
        os.kill(pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
  assert not (run_dir / 'summary.json').exists(), 'killed after the last round'
  killed_at = max(_checkpointed_rounds(run_dir))
  assert killed_at < 6

  # --quiet: a flag that may differ between a run and its resumption.
  result = _run(f'--output_dir={run_dir}', '--resume', '--quiet')
  assert result.returncode == 0, result.stderr
  assert 'round 6/6' not in result.stdout
  rows = _rows(run_dir)
  assert [r['clients'] for r in rows] == [
      r['clients'] for r in _rows(reference)]
  assert rows == _rows(reference)
  for name, value in _weights(reference).items():
    np.testing.assert_array_equal(_weights(run_dir)[name], value)
  assert _summary(run_dir) == _summary(reference)


def test_a_run_directory_refuses_other_flags(reference):
  result = _run(f'--output_dir={reference}', '--seed=1')
  assert result.returncode == 2
  for text in (f'--output_dir={reference} holds a run with different flags',
               '--seed=0 there, --seed=1 here', 'use another --output_dir'):
    assert text in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_bad_output_dirs_stop_with_one_clear_message(reference, tmp_path):
  (tmp_path / 'file').write_text('')
  cases = [
      ([f'--output_dir={tmp_path / "new"}', '--resume'],
       '--resume: no checkpoint'),
      ([f'--output_dir={tmp_path / "file" / "run"}'],
       'cannot write to --output_dir'),
  ]
  for flags, expected in cases:
    result = _run(*flags)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
