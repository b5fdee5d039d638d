"""What every benchmark shares: running a task, reading its outputs, writing
a markdown result that names the command which produced it.

A benchmark run is a subprocess of the task program with the same flags a
user would type, so that any row of a table can be rerun by hand.
"""

import csv
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Optional, Sequence

import numpy as np

_STDERR_TAIL_CHARS = 3000


class TaskFailed(RuntimeError):
  """A task subprocess exited with an error."""


def task_command(task: str, flags: Sequence[str],
                 output_dir: str) -> list[str]:
  """The command line that runs `task` with `flags` into `output_dir`."""
  return [sys.executable, '-m', task, *flags, f'--output_dir={output_dir}',
          '--quiet']


def run_task(task: str, flags: Sequence[str], output_dir: str,
             timeout_s: Optional[float] = None) -> dict:
  """Runs `python -m task flags --output_dir=output_dir --quiet`.

  Args:
    task: the task module, e.g. 'tasks.mnist_lt'.
    flags: its flags, e.g. ['--algo=fedavg', '--rounds=10'].
    output_dir: where the run writes its outputs (must not hold another run).
    timeout_s: optional wall-clock limit.

  Returns:
    The run's summary.json as a dict.

  Raises:
    TaskFailed: with the command and the tail of its stderr.
  """
  command = task_command(task, flags, output_dir)
  result = subprocess.run(command, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                          text=True, timeout=timeout_s, check=False)
  if result.returncode != 0:
    raise TaskFailed(f'{" ".join(command[1:])} exited with '
                     f'{result.returncode}:\n'
                     f'{result.stderr[-_STDERR_TAIL_CHARS:]}')
  return read_summary(output_dir)


def read_summary(output_dir: str) -> dict:
  with open(os.path.join(output_dir, 'summary.json')) as f:
    return json.load(f)


def round_seconds(output_dir: str) -> tuple[float, float]:
  """(first round's seconds, median seconds of the later rounds).

  The first round includes tracing and the worker's first compilation, so it
  is reported apart from the steady state.
  """
  with open(os.path.join(output_dir, 'metrics.csv')) as f:
    seconds = [float(row['round_seconds']) for row in csv.DictReader(f)
               if row.get('round_seconds')]
  if not seconds:
    raise ValueError(f'{output_dir}/metrics.csv holds no round times.')
  later = seconds[1:] or seconds
  return seconds[0], statistics.median(later)


def mean_std(values: Sequence[float], digits: int = 4) -> str:
  """'mean ± std' (population std; a single value shows ± 0)."""
  values = np.asarray(values, dtype=float)
  return f'{values.mean():.{digits}f} ± {values.std():.{digits}f}'


def markdown_table(header: Sequence[str],
                   rows: Sequence[Sequence[object]]) -> str:
  lines = ['| ' + ' | '.join(str(h) for h in header) + ' |',
           '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(str(cell) for cell in row) + ' |'
            for row in rows]
  return '\n'.join(lines)


def write_result(path: str, title: str, command: str, description: str,
                 table: str, elapsed_s: Optional[float] = None) -> None:
  """Writes a markdown result: title, the command and date, notes, table."""
  when = time.strftime('%Y-%m-%d')
  took = f', {elapsed_s:.0f} s' if elapsed_s is not None else ''
  text = '\n'.join([
      f'# {title}', '',
      f'Command: `{command}` (run {when}{took} on this machine: 2 CPU cores, '
      'no GPU).', '',
      description.strip(), '',
      table, ''])
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)
  print(f'wrote {path}')
