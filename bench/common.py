"""What every benchmark shares: running a grid of tasks, reading their
outputs, writing a markdown result that names the command which produced it.

A benchmark run is a subprocess of the task program with the same flags a
user would type, so that any row of a table can be rerun by hand. A benchmark
program only states its rows and columns: a list of `Run`s (task, full flags,
directory) for `run_grid`, which reuses every run already finished with the
same task and flags (recorded with the git commit in `bench_run.json` beside
its outputs), runs the others `--parallel` at a time, and retries a run that
timed out or crashed, a bounded number of times.
"""

import collections
from concurrent import futures
import dataclasses
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from typing import Hashable, Mapping, Optional, Sequence

from absl import flags
import numpy as np

from tff_imbalance import report

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
  """A finished run's summary.json (read by `report`, which knows it)."""
  summary = report.read_summary(output_dir)
  if summary is None:
    raise FileNotFoundError(f'{output_dir} holds no {report.SUMMARY_FILE}.')
  return summary


def round_seconds(output_dir: str) -> tuple[float, float]:
  """(first round's seconds, median seconds of the later rounds).

  The first round includes tracing and the worker's first compilation, so it
  is reported apart from the steady state.
  """
  _, seconds = report.read_run(output_dir).curve('round_seconds')
  if not seconds:
    raise ValueError(f'{output_dir}/metrics.csv holds no round times.')
  later = seconds[1:] or seconds
  return seconds[0], statistics.median(later)


def mean_std(values: Sequence[float], digits: int = 4) -> str:
  """'mean ± std' (population std; a single value shows ± 0)."""
  values = np.asarray(values, dtype=float)
  return format_mean_std(values.mean(), values.std(), digits)


def format_mean_std(mean: float, std: float, digits: int = 4) -> str:
  """'mean ± std' at `digits` decimals."""
  return f'{mean:.{digits}f} ± {std:.{digits}f}'


def markdown_table(header: Sequence[str],
                   rows: Sequence[Sequence[object]]) -> str:
  lines = ['| ' + ' | '.join(str(h) for h in header) + ' |',
           '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(str(cell) for cell in row) + ' |'
            for row in rows]
  return '\n'.join(lines)


def write_result(path: str, title: str, command: str, description: str,
                 table: str, elapsed_s: Optional[float] = None,
                 footer: str = '', ran_nothing: bool = False) -> None:
  """Writes a markdown result: title, the command and date, notes, table.

  `footer` (e.g. `Grid.footer()`: reused runs, mixed commits) follows the
  table when not empty. `ran_nothing`: every run was finished before (a
  table rewritten from its runs), so the header gives no time: the date is
  the rewrite's, and the seconds would be the rewrite's, not the runs'.
  """
  when = time.strftime('%Y-%m-%d')
  if ran_nothing:
    made = (f'rewritten {when} from runs finished earlier, none run now; '
            'they ran on')
  else:
    took = f', {elapsed_s:.0f} s' if elapsed_s is not None else ''
    made = f'run {when}{took} on this machine:'
  text = '\n'.join([
      f'# {title}', '',
      f'Command: `{command}` ({made} 2 CPU cores, no GPU).', '',
      description.strip(), '',
      table, ''] + ([footer.strip(), ''] if footer.strip() else []))
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)
  print(f'wrote {path}')


# ---------------------------------------------------------------------------
# The grid: every benchmark's runs, reused by their full flags, in parallel,
# retried when they time out or crash.

RECORD_FILE = 'bench_run.json'
_UNKNOWN_COMMIT = 'unknown'


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a grid: a task program, its full flags, its directory.

  Attributes:
    name: the run's directory relative to the grid's runs_dir, e.g.
      'ir100/fedavg/seed0'; unique within a grid.
    task: the task module, e.g. 'tasks.mnist_lt'.
    flags: every flag of the run but --output_dir and --quiet, which the grid
      adds; the reuse key together with `task`.
  """
  name: str
  task: str
  flags: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Outcome:
  """What became of one run.

  Attributes:
    run: the run.
    run_dir: where it wrote.
    summary: its summary.json, or None if it failed (or in a dry run).
    error: the last line of the failure, or None.
    reused: whether a finished run with the same task and flags was read
      back instead of run.
    commit: the git commit of the code that made it (RECORD_FILE).
    attempts: how many times it was started now (0 when reused).
  """
  run: Run
  run_dir: str
  summary: Optional[dict]
  error: Optional[str]
  reused: bool
  commit: str
  attempts: int


@dataclasses.dataclass(frozen=True)
class GridOptions:
  """How a grid runs.

  Attributes:
    runs_dir: the parent of every run's directory.
    parallel: task subprocesses at once.
    retries: extra attempts of a run that timed out or exited with an error
      (the same flags give the same run, so a retry loses nothing).
    timeout_s: seconds before an attempt is killed, or None.
    dry_run: print each command (and whether it would be reused), run none.
  """
  runs_dir: str
  parallel: int = 1
  retries: int = 1
  timeout_s: Optional[float] = None
  dry_run: bool = False


class Grid:
  """The outcomes of a grid's runs, by run name, in the order given."""

  def __init__(self, outcomes: Sequence[Outcome], dry_run: bool = False):
    self.outcomes = {o.run.name: o for o in outcomes}
    self.dry_run = dry_run

  def __getitem__(self, name: str) -> Outcome:
    return self.outcomes[name]

  def summaries(self, names: Sequence[str]) -> list[dict]:
    """The summaries of the named runs.

    Raises:
      TaskFailed: naming every one of them that failed.
    """
    failed = [self.outcomes[n] for n in names
              if self.outcomes[n].summary is None]
    if failed:
      raise TaskFailed('; '.join(f'{o.run.name}: {o.error}' for o in failed))
    return [self.outcomes[n].summary for n in names]

  def failures(self) -> list[Outcome]:
    """The runs that failed every attempt."""
    return [o for o in self.outcomes.values() if o.summary is None]

  @property
  def ran_count(self) -> int:
    """How many runs this invocation ran (not reused)."""
    return sum(not o.reused for o in self.outcomes.values())

  def footer(self) -> str:
    """Runs reused from earlier invocations and, if mixed, their commits.

    Empty when every run ran now from one commit.
    """
    outcomes = list(self.outcomes.values())
    reused = len(outcomes) - self.ran_count
    notes = []
    if reused:
      # When none ran now the header gives no time (write_result's
      # ran_nothing), so there is no time to qualify.
      timed = (' (the time above is this invocation\'s)' if self.ran_count
               else '')
      notes.append(f'{reused} of {len(outcomes)} runs were reused from an '
                   f'earlier invocation with the same task and flags{timed}.')
    commits = collections.Counter(o.commit for o in outcomes
                                  if o.summary is not None)
    if len(commits) > 1:
      notes.append('Runs of several commits are mixed: ' + ', '.join(
          f'{commit} ({count} runs)' for commit, count in
          sorted(commits.items())) + '.')
    return ' '.join(notes)


def git_commit(directory: str = '.') -> str:
  """The checked-out commit, '+dirty' when tracked files other than
  results/ differ from it (a benchmark writes its tables there; a second
  benchmark in the same checkout still runs the commit's code)."""
  def git(*args):
    return subprocess.run(['git', '-C', directory, *args],
                          capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL)
  head = git('rev-parse', '--short=12', 'HEAD')
  if head.returncode != 0:
    return _UNKNOWN_COMMIT
  dirty = git('diff', '--quiet', 'HEAD', '--', '.',
               ':(exclude)results').returncode != 0
  return head.stdout.strip() + ('+dirty' if dirty else '')


def _read_record(run_dir: str) -> Optional[dict]:
  try:
    with open(os.path.join(run_dir, RECORD_FILE)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _finished_record(run: Run, run_dir: str) -> Optional[dict]:
  """The record of a finished run of exactly this task and these flags."""
  record = _read_record(run_dir)
  if (record is None or
      not os.path.exists(os.path.join(run_dir, report.SUMMARY_FILE))):
    return None
  if record.get('task') != run.task or record.get('flags') != list(run.flags):
    return None
  return record


def run_commit(run_dir: str) -> str:
  """The git commit recorded with a run (RECORD_FILE), or 'unknown'."""
  record = _read_record(run_dir) or {}
  return record.get('commit', _UNKNOWN_COMMIT)


def finished_date(run_dir: str) -> str:
  """The day a run's summary.json was written (YYYY-MM-DD, UTC)."""
  return time.strftime('%Y-%m-%d', time.gmtime(os.path.getmtime(
      os.path.join(run_dir, report.SUMMARY_FILE))))


def finished_summary(run: Run, runs_dir: str) -> Optional[dict]:
  """The summary of a finished run of exactly `run` in runs_dir, or None.

  How a table collects the runs earlier invocations finished (a table can be
  completed across sittings) without running anything.
  """
  run_dir = os.path.join(runs_dir, run.name)
  if _finished_record(run, run_dir) is None:
    return None
  return read_summary(run_dir)


def _attempt(run: Run, run_dir: str, commit: str,
             timeout_s: Optional[float]) -> dict:
  """One fresh attempt: an empty directory, the record, the task."""
  # The task refuses a directory holding another run's flags, and a stale
  # summary.json must never pass for this run's: start from nothing.
  shutil.rmtree(run_dir, ignore_errors=True)
  os.makedirs(run_dir)
  with open(os.path.join(run_dir, RECORD_FILE), 'w') as f:
    json.dump(dict(task=run.task, flags=list(run.flags), commit=commit), f,
              indent=1)
  return run_task(run.task, run.flags, run_dir, timeout_s=timeout_s)


def _run_or_reuse(run: Run, options: GridOptions, commit: str) -> Outcome:
  run_dir = os.path.join(options.runs_dir, run.name)
  record = _finished_record(run, run_dir)
  if record is not None:
    return Outcome(run, run_dir, read_summary(run_dir), None, True,
                   record.get('commit', _UNKNOWN_COMMIT), 0)
  error = None
  for attempt in range(1, options.retries + 2):
    try:
      summary = _attempt(run, run_dir, commit, options.timeout_s)
      return Outcome(run, run_dir, summary, None, False, commit, attempt)
    except subprocess.TimeoutExpired:
      error = f'timed out after {options.timeout_s:g} s'
    except TaskFailed as e:
      error = str(e).strip().splitlines()[-1][:200]
    print(f'{run.name}: attempt {attempt} {error}', file=sys.stderr,
          flush=True)
  return Outcome(run, run_dir, None, error, False, commit,
                 options.retries + 1)


def _dry_run(runs: Sequence[Run], options: GridOptions) -> Grid:
  outcomes = []
  for run in runs:
    run_dir = os.path.join(options.runs_dir, run.name)
    reused = _finished_record(run, run_dir) is not None
    command = task_command(run.task, run.flags, run_dir)[1:]
    print(('# reused: ' if reused else '') + 'python ' + shlex.join(command))
    outcomes.append(Outcome(run, run_dir, None, 'dry run', reused,
                            _UNKNOWN_COMMIT, 0))
  return Grid(outcomes, dry_run=True)


def run_grid(runs: Sequence[Run], options: GridOptions) -> Grid:
  """Runs every run not already finished with the same task and flags.

  A run lives in `options.runs_dir/run.name` beside RECORD_FILE (its task,
  flags and git commit). It is read back when that record matches and its
  summary.json exists; otherwise its directory is emptied and it runs, up to
  `1 + options.retries` times if it times out or fails. Runs go
  `options.parallel` at a time, started in the order given.

  Args:
    runs: the grid's runs, names unique.
    options: where and how.

  Returns:
    The outcomes; a run that failed every attempt has `summary` None (the
    caller decides whether a table can do without it).

  Raises:
    ValueError: if two runs share a name or `options` are out of range.
  """
  names = [run.name for run in runs]
  duplicates = sorted({n for n in names if names.count(n) > 1})
  if duplicates:
    raise ValueError(f'runs share a directory: {", ".join(duplicates)}.')
  if options.parallel < 1 or options.retries < 0:
    raise ValueError(f'parallel must be >= 1 and retries >= 0 (got '
                     f'{options.parallel}, {options.retries}).')
  if options.dry_run:
    return _dry_run(runs, options)
  commit = git_commit(os.path.dirname(os.path.abspath(__file__)))
  outcomes = {}
  with futures.ThreadPoolExecutor(max_workers=options.parallel) as pool:
    pending = {pool.submit(_run_or_reuse, run, options, commit): run
               for run in runs}
    for future in futures.as_completed(pending):
      outcome = future.result()
      outcomes[outcome.run.name] = outcome
      print(f'{outcome.run.name}: ' + (
          'reused' if outcome.reused else
          f'failed ({outcome.error})' if outcome.summary is None else
          'done'), flush=True)
  return Grid([outcomes[name] for name in names])


def seeded_runs(name: str, task: str, run_flags: Sequence[str],
                seeds: int) -> list[Run]:
  """One configuration at seeds 0..seeds-1, in `name/seed<k>`."""
  return [Run(f'{name}/seed{seed}', task, (*run_flags, f'--seed={seed}'))
          for seed in range(seeds)]


def summaries_by_row(grid: Grid,
                     runs_by_row: Mapping[Hashable, Sequence[Run]]
                     ) -> dict[Hashable, list[dict]]:
  """Each row's summaries (see `Grid.summaries`)."""
  return {row: grid.summaries([run.name for run in runs])
          for row, runs in runs_by_row.items()}


def all_runs(runs_by_row: Mapping[Hashable, Sequence[Run]]) -> list[Run]:
  """Every run of every row, row by row."""
  return [run for runs in runs_by_row.values() for run in runs]


def slug(text: str) -> str:
  """A directory name for a row label: lowercase, [a-z0-9._=-] only."""
  return re.sub(r'[^a-z0-9._=-]+', '_', text.lower()).strip('_')


def define_grid_flags(runs_dir: str, parallel: int = 1,
                      timeout_s: Optional[int] = None) -> None:
  """Defines --runs_dir, --parallel, --retries, --run_timeout, --dry_run.

  Called by each benchmark program (its entry point owns its flags). A second
  call in one process (a test importing two benchmarks) keeps the first
  definitions.
  """
  if 'runs_dir' in flags.FLAGS:
    return
  flags.DEFINE_string('runs_dir', runs_dir,
                      'Where each run writes; a run whose task and flags '
                      f'match its {RECORD_FILE} is read back, not rerun.')
  flags.DEFINE_integer('parallel', parallel, 'Task subprocesses at once.',
                       lower_bound=1)
  flags.DEFINE_integer('retries', 1, 'Extra attempts of a run that timed out '
                       'or failed.', lower_bound=0)
  flags.DEFINE_integer('run_timeout', timeout_s,
                       'Seconds before an attempt of a run is killed (and '
                       'retried); none: no limit.', lower_bound=1)
  flags.DEFINE_bool('dry_run', False, 'Print the command of every run (and '
                    'whether it would be reused); run nothing.')


def grid_options() -> GridOptions:
  """The GridOptions of the flags of `define_grid_flags`."""
  values = flags.FLAGS
  return GridOptions(runs_dir=values.runs_dir, parallel=values.parallel,
                     retries=values.retries, timeout_s=values.run_timeout,
                     dry_run=values.dry_run)
