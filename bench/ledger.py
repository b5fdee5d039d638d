"""The committed record of a reproduction table's finished runs.

A run's directory under runs/ holds its whole output, and runs/ is not
committed: a fresh checkout or a new machine has none of it. A table needs
only a few numbers of each run, so `results/reproduce_<table>.runs.json`
keeps them beside the table, keyed by the run's directory name and checked
against the run's task and flags. A run the ledger holds is not run again,
and a table written on any checkout shows every run its ledger holds: a
table can be completed across sittings and machines.

Two kinds of entry:

* `runs`: one finished run (one seed): its number per measure (labelled, so
  that a table whose measures changed does not read stale numbers), its
  median later-round seconds, the commit of the code that made it, the date.
* `carried`: one cell's mean and population std over its seeds, without the
  per-seed numbers: what a table committed before the ledger existed showed
  for a cell whose run directories are gone. A table shows a carried cell
  only while the cell has fewer seeds of its own runs, and compares it with
  another row only over exactly its seeds (where a paired difference is the
  difference of the means).
"""

import dataclasses
import json
import math
import os
import re
from typing import Callable, Mapping, Optional, Sequence

from bench import common
from tff_imbalance import errors

SUFFIX = '.runs.json'
_SEED_FLAG = re.compile(r'^--seed=\d+$')


@dataclasses.dataclass(frozen=True)
class RunEntry:
  """One finished run's numbers.

  Attributes:
    task: the task module.
    flags: the run's full flags (the grid's reuse key with `task`).
    measures: the labels of `values`, the table's measures in order.
    values: per measure, the run's number as a fraction (NaN: n/a).
    seconds_per_round: the median later-round seconds.
    commit: the git commit of the code that made the run.
    date: when it finished (YYYY-MM-DD).
  """
  task: str
  flags: tuple[str, ...]
  measures: tuple[str, ...]
  values: tuple[float, ...]
  seconds_per_round: float
  commit: str
  date: str


@dataclasses.dataclass(frozen=True)
class CarriedCell:
  """A cell's mean and std over its seeds, without per-seed numbers.

  Attributes:
    task: the task module.
    flags: the cell's flags without --seed.
    measures: the labels of `means` and `stds`.
    seed_ids: the seeds the mean is over.
    means: per measure, as a fraction (NaN: n/a).
    stds: per measure, population std, as a fraction.
    seconds_per_round: the median later-round seconds of the runs.
    source: where the numbers come from (file, commit, the runs' code).
  """
  task: str
  flags: tuple[str, ...]
  measures: tuple[str, ...]
  seed_ids: tuple[int, ...]
  means: tuple[float, ...]
  stds: tuple[float, ...]
  seconds_per_round: float
  source: str


@dataclasses.dataclass
class Ledger:
  """Run entries by run name, carried cells by cell name (the run name
  without `/seed<k>`)."""
  runs: dict[str, RunEntry] = dataclasses.field(default_factory=dict)
  carried: dict[str, CarriedCell] = dataclasses.field(default_factory=dict)

  def run(self, name: str, task: str, flags: Sequence[str],
          measures: Sequence[str]) -> Optional[RunEntry]:
    """The entry of run `name` if it is exactly this task, these flags and
    these measures, else None."""
    entry = self.runs.get(name)
    if entry is None or (entry.task, entry.flags, entry.measures) != (
        task, tuple(flags), tuple(measures)):
      return None
    return entry

  def to_run(self, runs: Sequence[common.Run], runs_dir: str,
             measures: Sequence[str]) -> list[common.Run]:
    """The runs a grid must still run or reuse from runs_dir: all but those
    only this ledger holds (finished, where runs/ lost them)."""
    return [run for run in runs
            if common.finished_summary(run, runs_dir) is not None or
            self.run(run.name, run.task, run.flags, measures) is None]

  def carries(self, runs: Sequence[common.Run],
              measures: Sequence[str]) -> bool:
    """Whether a carried cell holds all of `runs` (one cell's seeds): one
    cell name, its task, flags and measures, and every run's seed among its
    seeds. Such runs are finished: the table shows the carried cell, so
    running them again would only replace it."""
    names = {os.path.dirname(run.name) for run in runs}
    if len(names) != 1:
      return False
    first = runs[0]
    cell = self.carried_cell(names.pop(), first.task, first.flags, measures)
    return cell is not None and all(
        _seed(run.flags) in cell.seed_ids for run in runs)

  def carried_cell(self, name: str, task: str, flags: Sequence[str],
                   measures: Sequence[str]) -> Optional[CarriedCell]:
    """The carried cell `name` if it is exactly this task, these flags (any
    --seed dropped) and these measures, else None."""
    cell = self.carried.get(name)
    if cell is None or (cell.task, cell.flags, cell.measures) != (
        task, unseeded(flags), tuple(measures)):
      return None
    return cell


def entries(runs: Sequence[common.Run], runs_dir: str, ledger: Ledger,
            measures: Mapping[str, Callable[[dict], float]]
            ) -> list[Optional[RunEntry]]:
  """Each run's numbers, in the order of `runs`.

  A run finished in `runs_dir` is read from its directory and recorded in
  `ledger` (which the caller writes); otherwise the ledger's entry of
  exactly its task, flags and measures; otherwise None.

  Args:
    runs: the runs.
    runs_dir: their parent directory.
    ledger: read, and updated with every run read from a directory.
    measures: label -> the run's number from its summary.json.
  """
  labels = tuple(measures)
  found = []
  for run in runs:
    summary = common.finished_summary(run, runs_dir)
    if summary is not None:
      run_dir = os.path.join(runs_dir, run.name)
      ledger.runs[run.name] = RunEntry(
          run.task, run.flags, labels,
          tuple(read(summary) for read in measures.values()),
          common.round_seconds(run_dir)[1], common.run_commit(run_dir),
          common.finished_date(run_dir))
    found.append(ledger.run(run.name, run.task, run.flags, labels))
  return found


def _seed(flags: Sequence[str]) -> Optional[int]:
  """The run's --seed=K, None without one."""
  return next((int(f.split('=', 1)[1]) for f in flags
               if _SEED_FLAG.match(f)), None)


def unseeded(flags: Sequence[str]) -> tuple[str, ...]:
  """The flags without --seed=K: what every seed of a cell shares."""
  return tuple(f for f in flags if not _SEED_FLAG.match(f))


def path_for(table_path: str) -> str:
  """The ledger beside a table: results/x.md -> results/x.runs.json."""
  return os.path.splitext(table_path)[0] + SUFFIX


def _number(value: Optional[float]) -> float:
  return float('nan') if value is None else float(value)


def _json_number(value: float) -> Optional[float]:
  # JSON has no NaN: n/a is null.
  return None if math.isnan(value) else value


def read(path: str) -> Ledger:
  """The ledger at `path`; an empty one when there is no file.

  Raises:
    errors.UserInputError: if the file is not a ledger.
  """
  if not os.path.exists(path):
    return Ledger()
  try:
    with open(path) as f:
      raw = json.load(f)
    runs = {
        name: RunEntry(e['task'], tuple(e['flags']), tuple(e['measures']),
                       tuple(map(_number, e['values'])),
                       float(e['seconds_per_round']), e['commit'], e['date'])
        for name, e in raw.get('runs', {}).items()}
    carried = {
        name: CarriedCell(c['task'], tuple(c['flags']), tuple(c['measures']),
                          tuple(c['seed_ids']), tuple(map(_number,
                                                          c['means'])),
                          tuple(map(_number, c['stds'])),
                          float(c['seconds_per_round']), c['source'])
        for name, c in raw.get('carried', {}).items()}
  except (ValueError, KeyError, TypeError, AttributeError) as e:
    raise errors.UserInputError(
        f'{path}: not a run ledger ({type(e).__name__}: {e}); restore it '
        'with git checkout, or delete it to rebuild it from runs/.') from None
  return Ledger(runs, carried)


def write(path: str, ledger: Ledger) -> None:
  """Writes `ledger` to `path`, entries sorted by name (stable diffs)."""
  def encode(entry):
    fields = dataclasses.asdict(entry)
    for key in ('values', 'means', 'stds'):
      if key in fields:
        fields[key] = [_json_number(v) for v in fields[key]]
    return fields
  raw = {'runs': {n: encode(e) for n, e in sorted(ledger.runs.items())},
         'carried': {n: encode(c)
                     for n, c in sorted(ledger.carried.items())}}
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    json.dump(raw, f, indent=1, ensure_ascii=False)
    f.write('\n')
  os.replace(tmp, path)
