"""A task run as a user runs it: killed, stopped, resumed, repeated, refused.

Each case runs `python -m tasks.mnist_lt` in a subprocess on a tiny
configuration. The reference run is made once per module and shared; the tests
that use it only read its directory. Runs that no test interrupts start
together (`concurrent_runs`). A run killed with SIGKILL or stopped with
SIGTERM must leave no TFF worker behind; a resumed run must start after its
checkpoint (it prints, or keeps the timings of, only the later rounds) and end
bit-identical to the uninterrupted run, also for the methods whose state holds
more than the model.
"""

import csv
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import concurrent_runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--model=mlp', '--num_clients=5', '--clients_per_round=3',
        '--imbalance_ratio=10', '--rounds=6', '--checkpoint_every=1',
        '--eval_every=3', '--batch_size=16']
KILL_AFTER_ROUND = 3
# Methods whose process state carries more than the model: CLIMB's dual
# variables, RedGrape's global gradient prototypes, the composition monitor's
# round counter, CReFF's federated features. Each was checked to fail these
# tests when a resume restores only the model and resets the rest.
STATEFUL_METHODS = {
    'climb': ['--algo=climb'],
    'redgrape': ['--algo=redgrape'],
    # Ratio Loss from round 3, the first resumed round: a monitor whose round
    # restarted at 0 would train round 3 with plain CE.
    'ratio': ['--algo=ratio', '--ratio_start_round=3'],
    'creff': ['--algo=creff', '--creff_features_per_class=4',
              '--creff_match_steps=2', '--creff_retrain_epochs=2'],
}
SHORT = ['--rounds=4', '--eval_every=2']
STOP_AFTER_ROUND = 2


def _command(*flags):
  return [sys.executable, '-m', 'tasks.mnist_lt', *TINY, *flags]


def _run(*flags, timeout=240):
  return subprocess.run(_command(*flags), cwd=ROOT, capture_output=True,
                        text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _timed_rows(run_dir):
  with open(os.path.join(run_dir, 'metrics.csv'), newline='') as f:
    return list(csv.DictReader(f))


def _rows(run_dir):
  rows = _timed_rows(run_dir)
  for row in rows:
    del row['round_seconds']  # Wall time is the one thing allowed to differ.
  return rows


def _round_seconds(run_dir, last_round):
  """Rounds 1..last_round's wall times: a round run again would differ."""
  return [row['round_seconds'] for row in _timed_rows(run_dir)
          if int(row['round']) <= last_round]


def _printed_rounds(stdout):
  return [int(line.split()[1].split('/')[0]) for line in stdout.splitlines()
          if line.startswith('round ')]


def _weights(run_dir):
  with np.load(os.path.join(run_dir, 'final_weights.npz')) as f:
    return {name: f[name] for name in f.files}


def _summary(run_dir):
  with open(os.path.join(run_dir, 'summary.json')) as f:
    return json.load(f)


@pytest.fixture(scope='module')
def uninterrupted_runs(tmp_path_factory):
  """Two uninterrupted runs with the same flags, started together."""
  run_dirs = [tmp_path_factory.mktemp(name) / 'run'
              for name in ('reference', 'repeat')]
  results = concurrent_runs.run_all(
      {run_dir: _command(f'--output_dir={run_dir}') for run_dir in run_dirs},
      cwd=ROOT, timeout=240)
  for result in results.values():
    assert result.returncode == 0, result.stderr
  return run_dirs


@pytest.fixture(scope='module')
def reference(uninterrupted_runs):
  """An uninterrupted run's directory."""
  return uninterrupted_runs[0]


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


def test_same_flags_give_identical_results(uninterrupted_runs):
  reference, repeat = uninterrupted_runs
  assert _rows(repeat) == _rows(reference)
  assert _summary(repeat) == _summary(reference)
  for name, value in _weights(reference).items():
    np.testing.assert_array_equal(_weights(repeat)[name], value)


def _worker_pids(pid):
  """The TFF `worker_binary` children of process `pid`."""
  children = []
  for path in glob.glob(f'/proc/{pid}/task/*/children'):
    try:
      with open(path) as f:
        children += [int(c) for c in f.read().split()]
    except FileNotFoundError:
      continue  # A thread that ended since the glob has no children.
  workers = []
  for child in children:
    try:
      with open(f'/proc/{child}/cmdline', 'rb') as f:
        command = f.read().split(b'\0')[0]
    except FileNotFoundError:
      continue
    if os.path.basename(command) == b'worker_binary':
      workers.append(child)
  return workers


def _is_running(pid):
  """Whether `pid` exists and is not a zombie (ended, waiting to be reaped)."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      # The state follows the command name, which is in parentheses.
      return f.read().rpartition(')')[2].split()[0] != 'Z'
  except FileNotFoundError:
    return False


def _wait_until_gone(pids, seconds):
  deadline = time.monotonic() + seconds
  while any(_is_running(pid) for pid in pids):
    if time.monotonic() > deadline:
      for pid in pids:  # Do not leave them to the other tests.
        try:
          os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
          pass
      return False
    time.sleep(0.05)
  return True


def _checkpointed_rounds(run_dir):
  prefix = 'program_state_'
  try:
    names = os.listdir(run_dir / 'checkpoints')
  except FileNotFoundError:
    return []
  return [int(n[len(prefix):]) for n in names
          if n.startswith(prefix) and n[len(prefix):].isdigit()]


def _stop_mid_run(run_dir, log_dir, signum):
  """Starts a run, sends `signum` once round 3 is saved; (exit status, workers).

  The workers are the run's `worker_binary` children, found before the signal.
  """
  with open(log_dir / 'stdout', 'w') as out, \
       open(log_dir / 'stderr', 'w') as err:
    process = subprocess.Popen(_command(f'--output_dir={run_dir}'), cwd=ROOT,
                               stdout=out, stderr=err,
                               stdin=subprocess.DEVNULL)
    try:
      deadline = time.monotonic() + 180
      while max(_checkpointed_rounds(run_dir), default=0) < KILL_AFTER_ROUND:
        assert process.poll() is None, 'the run ended before the signal'
        assert time.monotonic() < deadline
        time.sleep(0.01)
      workers = _worker_pids(process.pid)
      os.kill(process.pid, signum)
      status = process.wait(timeout=60)
    finally:
      if process.poll() is None:
        process.kill()
        process.wait()
  assert len(workers) == 1, 'the run had no TFF worker to check'
  assert not (run_dir / 'summary.json').exists(), 'stopped after the last round'
  return status, workers


def test_resume_after_sigkill_reproduces_the_uninterrupted_run(reference,
                                                               tmp_path):
  run_dir = tmp_path / 'run'
  status, workers = _stop_mid_run(run_dir, tmp_path, signal.SIGKILL)
  assert status == -signal.SIGKILL
  # PR_SET_PDEATHSIG: the kernel ends the worker with its parent.
  assert _wait_until_gone(workers, seconds=5), 'the TFF worker outlived its run'
  killed_at = max(_checkpointed_rounds(run_dir))
  assert killed_at < 6
  kept_seconds = _round_seconds(run_dir, killed_at)

  # --quiet: a flag that may differ between a run and its resumption.
  result = _run(f'--output_dir={run_dir}', '--resume', '--quiet')
  assert result.returncode == 0, result.stderr
  # Rounds up to the checkpoint were not run again: their timings are kept.
  assert _round_seconds(run_dir, killed_at) == kept_seconds
  rows = _rows(run_dir)
  assert [r['clients'] for r in rows] == [
      r['clients'] for r in _rows(reference)]
  assert rows == _rows(reference)
  for name, value in _weights(reference).items():
    np.testing.assert_array_equal(_weights(run_dir)[name], value)
  assert _summary(run_dir) == _summary(reference)


def test_sigterm_stops_cleanly_and_resumes(reference, tmp_path):
  run_dir = tmp_path / 'run'
  status, workers = _stop_mid_run(run_dir, tmp_path, signal.SIGTERM)
  assert status == 128 + signal.SIGTERM
  assert (tmp_path / 'stderr').read_text() == (
      'stopped by SIGTERM; the checkpoints are kept: resume with --resume.\n')
  # Stopped by the run's atexit hook before it exited (the grace is 2 s).
  assert _wait_until_gone(workers, seconds=1), 'the TFF worker outlived its run'
  stopped_at = max(_checkpointed_rounds(run_dir))
  assert KILL_AFTER_ROUND <= stopped_at < 6

  result = _run(f'--output_dir={run_dir}', '--resume')
  assert result.returncode == 0, result.stderr
  assert _printed_rounds(result.stdout) == list(range(stopped_at + 1, 7))
  assert _rows(run_dir) == _rows(reference)
  for name, value in _weights(reference).items():
    np.testing.assert_array_equal(_weights(run_dir)[name], value)
  assert _summary(run_dir) == _summary(reference)


def _keep_checkpoints_up_to(run_dir, last_round):
  """Leaves `run_dir` as a kill right after round `last_round`'s save would.

  The later checkpoints and the final results go; the later rows of
  metrics.csv stay (a kill can come after a row and before its checkpoint),
  and the resumed run must drop them.
  """
  for round_num in _checkpointed_rounds(run_dir):
    if round_num > last_round:
      shutil.rmtree(run_dir / 'checkpoints' / f'program_state_{round_num}')
  for name in ('summary.json', 'final_weights.npz'):
    os.remove(run_dir / name)


@pytest.fixture(scope='module')
def stateful_runs(tmp_path_factory):
  """Per method: an uninterrupted run, and a copy resumed after a kill.

  The kill itself is tested above for FedAvg; here the directory it leaves
  is made exactly, so that the run stops at a known round every time. The
  methods' runs start together, then their resumes (`concurrent_runs`).
  """
  root = tmp_path_factory.mktemp('stateful')
  references = {method: root / method / 'reference'
                for method in STATEFUL_METHODS}
  first = concurrent_runs.run_all(
      {method: _command(*flags, *SHORT, f'--output_dir={references[method]}')
       for method, flags in STATEFUL_METHODS.items()}, cwd=ROOT, timeout=240)
  resumed = {}
  for method, result in first.items():
    if result.returncode == 0:
      resumed[method] = root / method / 'run'
      shutil.copytree(references[method], resumed[method])
      _keep_checkpoints_up_to(resumed[method], STOP_AFTER_ROUND)
  second = concurrent_runs.run_all(
      {method: _command(*STATEFUL_METHODS[method], *SHORT,
                        f'--output_dir={run_dir}', '--resume')
       for method, run_dir in resumed.items()}, cwd=ROOT, timeout=240)
  return {method: (first[method], references[method], second.get(method),
                   resumed.get(method))
          for method in STATEFUL_METHODS}


@pytest.mark.parametrize('method', sorted(STATEFUL_METHODS))
def test_resume_restores_state_beyond_the_model(method, stateful_runs):
  first, reference, result, run_dir = stateful_runs[method]
  assert first.returncode == 0, first.stderr
  assert result.returncode == 0, result.stderr
  assert _printed_rounds(result.stdout) == [3, 4]
  assert (_round_seconds(run_dir, STOP_AFTER_ROUND) ==
          _round_seconds(reference, STOP_AFTER_ROUND))
  # Bit for bit: a state restored as its initial value (duals at zero, no
  # prototypes, a fresh monitor, new features) changes rounds 3 and 4.
  assert _rows(run_dir) == _rows(reference)
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
