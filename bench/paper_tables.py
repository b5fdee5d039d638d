"""Published tables and the runs that reproduce them: the machinery.

A `PaperTable` (one part of a `bench.reproduce --table`) names its rows
(methods, each with its flags), its columns (settings), the numbers it
compares (`Measure`s, with the paper's numbers in the paper's unit) and its
budgets. `make_table` runs the chosen cells through bench/common's grid, then
`collect`s every finished run of every cell from the runs directory, or
from the table's committed ledger where runs/ lacks it (bench/ledger.py; so
a table can be completed across sittings and checkouts) and writes a markdown file with,
per row, the paper's number, ours (mean ± std over the seeds it has), both
differences to the first row and whether their signs agree, and a figure of
those differences. A run's directory is named by its flags
(`<table>/<budget>/<column flags>/<row flags>/seed<k>`), so a row that two
parts share is one run. The tables themselves are in bench/seed_tables.py.
"""

import collections
import dataclasses
import os
import statistics
import time
from typing import Callable, Mapping, Optional, Sequence

from matplotlib import figure as figure_lib
from matplotlib.backends import backend_agg
import numpy as np

from bench import common
from bench import ledger as ledger_lib
from tff_imbalance import errors

# Seeds looked for when a table collects finished runs.
MAX_SEEDS = 10


@dataclasses.dataclass(frozen=True)
class Budget:
  """Rounds, local epochs and model of one budget of a table.

  Attributes:
    rounds: communication rounds.
    local_epochs: local epochs per round.
    model: the task's --model.
    note: how it differs from the paper's, for the table's text.
  """
  rounds: int
  local_epochs: int
  model: str
  note: str


@dataclasses.dataclass(frozen=True)
class Measure:
  """A number of each run, and the paper's, in the paper's unit.

  Attributes:
    label: the column header, e.g. 'accuracy', 'Ac.M', 'AUC'.
    read: (summary, rounds, last_rounds) -> the run's value as a fraction.
    paper: (row, column) -> the paper's number; cells without one are blank.
    scale: the paper's unit per fraction (100 for percent, 1 for fractions).
  """
  label: str
  read: Callable[[dict, int, int], float]
  paper: Mapping[tuple[str, str], float] = dataclasses.field(
      default_factory=dict)
  scale: float = 100.0


def last_rounds_mean(metric: str) -> Callable[[dict, int, int], float]:
  """The mean of `metric` over the evaluations of the last rounds."""
  def read(summary: dict, rounds: int, last_rounds: int) -> float:
    evaluations = [e for e in summary['history']
                   if e['round'] > rounds - last_rounds]
    if not evaluations:
      raise ValueError(f'no evaluation in the last {last_rounds} rounds.')
    # None where the metric has no classes to average (e.g. few-shot
    # accuracy without a class under 20 examples): NaN, shown as n/a.
    values = [e[metric] for e in evaluations if e.get(metric) is not None]
    return statistics.fmean(values) if values else float('nan')
  return read


def monitor_cosine(summary: dict, rounds: int, last_rounds: int) -> float:
  """The monitor's mean cosine over every round it saw; NaN (n/a) for a
  run without the monitor."""
  del rounds, last_rounds
  cosine = summary.get('released', {}).get('monitor_cosine_similarity')
  return float('nan') if cosine is None else cosine['mean']


def local_global_cosine(summary: dict, rounds: int, last_rounds: int
                        ) -> float:
  """The split's mean cosine between the clients' and the global class
  counts (002's CS, `partition.local_global_cosine`)."""
  del rounds, last_rounds  # A property of the split.
  return summary['data'].get('local_global_cosine_mean', float('nan'))


@dataclasses.dataclass(frozen=True)
class PaperTable:
  """A published table and the runs that reproduce it.

  Attributes:
    name: the part's name (a --table is one or more parts).
    title: the part's heading.
    source: which paper and table, for the text.
    task: the task module every run uses.
    shared_flags: flags of every run (data, split, optimiser), budget aside.
    rows: method label -> its flags (the first row is the baseline every
      difference is taken to: FedAvg, or CE).
    columns: setting label -> its flags.
    measures: the compared numbers, the first the one whose difference to
      the baseline row is compared with the paper's.
    budgets: 'cpu' and 'paper' budgets.
    last_rounds: the paper's number is the mean over this many last rounds
      (1: the last evaluation).
    notes: what else the reader must know (method settings, deviations).
    ours_only: further measures of our runs (no published number).
  """
  name: str
  title: str
  source: str
  task: str
  shared_flags: tuple[str, ...]
  rows: Mapping[str, tuple[str, ...]]
  columns: Mapping[str, tuple[str, ...]]
  measures: tuple[Measure, ...]
  budgets: Mapping[str, Budget]
  last_rounds: int
  notes: str
  ours_only: tuple[Measure, ...] = ()


def budget_flags(budget: Budget, last_rounds: int) -> tuple[str, ...]:
  # Every round of the last `last_rounds` is evaluated (the mean the paper
  # reports); the others every 5 rounds, for the curves.
  return (f'--rounds={budget.rounds}', f'--local_epochs={budget.local_epochs}',
          f'--model={budget.model}', '--eval_every=5',
          f'--eval_last={last_rounds}')


def flags_slug(run_flags: Sequence[str], fallback: str) -> str:
  """A directory name made of flags ('algo=fedfocal_psi=0.8'): a row or
  column with the same flags in two parts of a table is one run."""
  return common.slug(' '.join(f.lstrip('-') for f in run_flags)) or (
      common.slug(fallback))


def cell_runs(table: PaperTable, group: str, budget_name: str, column: str,
              row: str, seeds: int) -> list[common.Run]:
  """The runs of one cell at seeds 0..seeds-1, in
  `group/budget/<column flags>/<row flags>/seed<k>`."""
  budget = table.budgets[budget_name]
  run_flags = (*table.shared_flags, *table.columns[column], *table.rows[row],
               *budget_flags(budget, table.last_rounds))
  return common.seeded_runs(
      f'{group}/{budget_name}/'
      f'{flags_slug(table.columns[column], column)}/'
      f'{flags_slug(table.rows[row], row)}', table.task, run_flags, seeds)


@dataclasses.dataclass(frozen=True)
class Cell:
  """Our finished runs of one (row, column).

  Attributes:
    values: per measure (the table's, then its ours_only), per seed; empty
      for a carried cell.
    seconds_per_round: per seed, the median later-round seconds.
    commits: per seed, the git commit of the code that made the run (for a
      carried cell, where its numbers were carried from).
    seed_ids: the seeds, in the order of the values.
    carried: the cell's mean and std carried by the ledger, when the table
      shows those instead of per-seed numbers (`bench.ledger`).
  """
  values: tuple[tuple[float, ...], ...]
  seconds_per_round: tuple[float, ...]
  commits: tuple[str, ...]
  seed_ids: tuple[int, ...]
  carried: Optional[ledger_lib.CarriedCell] = None

  @property
  def seeds(self) -> int:
    return len(self.seed_ids)

  def mean(self, measure: int, seeds: Optional[set[int]] = None
           ) -> Optional[float]:
    """The mean over all seeds, or over `seeds` among them; None for a
    carried cell asked for a part of its seeds (it has only the mean over
    all of them)."""
    if self.carried is not None:
      if seeds is not None and not set(self.seed_ids) <= seeds:
        return None
      return self.carried.means[measure]
    return statistics.fmean(
        v for v, seed in zip(self.values[measure], self.seed_ids)
        if seeds is None or seed in seeds)

  def text(self, measure: int, scale: float) -> str:
    """'mean ± std' of a measure in the paper's unit; n/a when undefined."""
    if self.carried is not None:
      mean, std = self.carried.means[measure], self.carried.stds[measure]
      if np.isnan(mean):
        return 'n/a'
      return common.format_mean_std(scale * mean, scale * std, _digits(scale))
    return _ours(self.values[measure], scale)


def _own_cell(table: PaperTable, group: str, budget_name: str, column: str,
              row: str, runs_dir: str, ledger: ledger_lib.Ledger
              ) -> Optional[Cell]:
  """The cell's finished runs: from their directories (recorded in
  `ledger`), else from `ledger`'s run entries."""
  rounds = table.budgets[budget_name].rounds
  measures = {
      m.label: (lambda summary, m=m: m.read(summary, rounds,
                                             table.last_rounds))
      for m in (*table.measures, *table.ours_only)}
  found = [(seed, entry) for seed, entry in enumerate(ledger_lib.entries(
      cell_runs(table, group, budget_name, column, row, MAX_SEEDS),
      runs_dir, ledger, measures)) if entry is not None]
  if not found:
    return None
  return Cell(tuple(zip(*(entry.values for _, entry in found))),
              tuple(entry.seconds_per_round for _, entry in found),
              tuple(entry.commit for _, entry in found),
              tuple(seed for seed, _ in found))


def collect(table: PaperTable, group: str, budget_name: str, runs_dir: str,
            ledger: Optional[ledger_lib.Ledger] = None
            ) -> dict[tuple[str, str], Cell]:
  """Every finished run of every cell (seeds 0..MAX_SEEDS-1).

  A run is read from its directory in runs_dir, else from `ledger`'s run
  entries; every run read from a directory is recorded in `ledger` (which
  the caller writes). A cell with more seeds carried by `ledger` than runs
  of its own shows the carried mean and std.
  """
  ledger = ledger_lib.Ledger() if ledger is None else ledger
  labels = tuple(m.label for m in (*table.measures, *table.ours_only))
  cells = {}
  for column in table.columns:
    for row in table.rows:
      cell = _own_cell(table, group, budget_name, column, row, runs_dir,
                       ledger)
      first = cell_runs(table, group, budget_name, column, row, 1)[0]
      carried = ledger.carried_cell(os.path.dirname(first.name), first.task,
                                    first.flags, labels)
      if carried is not None and (cell is None or
                                  cell.seeds < len(carried.seed_ids)):
        cell = Cell((), (carried.seconds_per_round,) * len(carried.seed_ids),
                    (carried.source,) * len(carried.seed_ids),
                    carried.seed_ids, carried)
      if cell is not None:
        cells[(row, column)] = cell
  return cells


def paper_difference(table: PaperTable, row: str,
                     column: str) -> Optional[float]:
  baseline = next(iter(table.rows))
  paper = table.measures[0].paper
  if row == baseline or (row, column) not in paper or (
      (baseline, column) not in paper):
    return None
  return paper[(row, column)] - paper[(baseline, column)]


def our_difference(table: PaperTable, cells: Mapping[tuple[str, str], Cell],
                   row: str, column: str) -> Optional[float]:
  """Our row's difference to the baseline row in the first measure (see
  `difference_and_pairing`), None where there is none."""
  found = difference_and_pairing(table, cells, row, column)
  return None if found is None else found[0]


def difference_and_pairing(table: PaperTable,
                           cells: Mapping[tuple[str, str], Cell], row: str,
                           column: str) -> Optional[tuple[float, bool]]:
  """Our row's difference to the baseline row, and whether it is paired.

  Paired by seed (the same split and initial model): the means over the
  seeds both rows have, so a row with fewer seeds is not compared with
  others' seeds. A carried cell has only its mean over all of its seeds:
  against a row with other seeds the difference is of the two rows' means
  over their own seeds, unpaired (False).
  """
  baseline = next(iter(table.rows))
  if row == baseline or (row, column) not in cells or (
      (baseline, column) not in cells):
    return None
  ours, base = cells[(row, column)], cells[(baseline, column)]
  common_seeds = set(ours.seed_ids) & set(base.seed_ids)
  if not common_seeds:
    return None
  scale = table.measures[0].scale
  means = [cell.mean(0, common_seeds) for cell in (ours, base)]
  if None not in means:
    return scale * (means[0] - means[1]), True
  return scale * (ours.mean(0) - base.mean(0)), False


def _digits(scale: float) -> int:
  """Decimals of a number in the paper's unit: 2 for percent, 4 for
  fractions."""
  return 2 if scale != 1 else 4


def _ours(values: Sequence[float], scale: float) -> str:
  """mean ± std of our values in the paper's unit; n/a when undefined."""
  if all(np.isnan(values)):
    return 'n/a'
  return common.mean_std(np.multiply(values, scale), _digits(scale))


def same_sign(paper_diff: float, ours_diff: float, digits: int) -> str:
  """'yes' when the two differences have one sign as printed (a difference
  that prints as 0 has none), '**no**' when they differ, '**no** (0)' when
  exactly one of them is 0 at the table's precision."""
  paper_sign, ours_sign = (np.sign(round(d, digits))
                           for d in (paper_diff, ours_diff))
  if paper_sign == ours_sign:
    return 'yes'
  return '**no** (0)' if 0 in (paper_sign, ours_sign) else '**no**'


def column_table(table: PaperTable, column: str,
                 cells: Mapping[tuple[str, str], Cell]) -> str:
  first = table.measures[0]
  header = ['method']
  for measure in table.measures:
    header += [f'{measure.label}: paper', f'{measure.label}: ours']
  header += [f'{first.label}: paper − {next(iter(table.rows))}',
             f'ours − {next(iter(table.rows))}', 'same sign']
  header += [f'{m.label} (ours)' for m in table.ours_only]
  header += ['seeds', 's/round']
  lines = []
  for row in table.rows:
    cell = cells.get((row, column))
    line = [row]
    for index, measure in enumerate(table.measures):
      paper = measure.paper.get((row, column))
      line.append('' if paper is None else
                  f'{paper:.{_digits(measure.scale)}f}')
      line.append('not run yet' if cell is None else
                  cell.text(index, measure.scale))
    paper_diff = paper_difference(table, row, column)
    found = difference_and_pairing(table, cells, row, column)
    ours_diff, paired = found if found is not None else (None, True)
    digits = _digits(first.scale)
    agree = ''
    if paper_diff is not None and ours_diff is not None:
      agree = same_sign(paper_diff, ours_diff, digits)
    line += ['' if paper_diff is None else f'{paper_diff:+.{digits}f}',
             '' if ours_diff is None else
             f'{ours_diff:+.{digits}f}' + ('' if paired else ' †'), agree]
    for offset, measure in enumerate(table.ours_only, len(table.measures)):
      line.append('' if cell is None else cell.text(offset, measure.scale))
    line += ['' if cell is None else str(cell.seeds),
             '' if cell is None else
             f'{statistics.median(cell.seconds_per_round):.1f}']
    lines.append(line)
  return common.markdown_table(header, lines)


def plot(parts: Sequence[PaperTable],
         cells: Mapping[str, Mapping[tuple[str, str], Cell]],
         path: str) -> None:
  """Per part and column: each row's difference to the baseline row in the
  first measure, the paper's beside ours."""
  panels = [(part, column) for part in parts for column in part.columns]
  width = min(4, len(panels))
  height = -(-len(panels) // width)
  figure = figure_lib.Figure(figsize=(4.2 * width, 3.8 * height))
  backend_agg.FigureCanvasAgg(figure)
  axes = figure.subplots(height, width, squeeze=False).ravel()
  for ax, (part, column) in zip(axes, panels):
    methods = list(part.rows)[1:]
    x = np.arange(len(methods))
    paper = [paper_difference(part, m, column) for m in methods]
    ours = [our_difference(part, cells[part.name], m, column)
            for m in methods]
    ax.bar(x - 0.2, [np.nan if v is None else v for v in paper], 0.4,
           label='paper', color='#999999')
    ax.bar(x + 0.2, [np.nan if v is None else v for v in ours], 0.4,
           label='ours', color='#1f77b4')
    ax.axhline(0, color='black', linewidth=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(methods, rotation=45, ha='right', fontsize=7)
    ax.set_title(f'{part.title.split(":")[0]}\n{column}', fontsize=8)
    ax.set_ylabel(f'{part.measures[0].label} − {next(iter(part.rows))}',
                  fontsize=7)
    ax.legend(fontsize=7)
  for ax in axes[len(panels):]:
    ax.set_visible(False)
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  print(f'wrote {path}')


def part_text(part: PaperTable, group: str, budget_name: str) -> str:
  budget = part.budgets[budget_name]
  first_column, first_row = next(iter(part.columns)), next(iter(part.rows))
  example = cell_runs(part, group, budget_name, first_column, first_row,
                      1)[0]
  return '\n\n'.join([
      f'{part.source}, at budget `{budget_name}`: {budget.rounds} rounds, '
      f'{budget.local_epochs} local epoch(s), model `{budget.model}` '
      f'({budget.note}).',
      f'Each run is `python -m {part.task} {" ".join(example.flags)}` with '
      f'the column\'s and the row\'s flags in place of '
      f'`{" ".join((*part.columns[first_column], *part.rows[first_row]))}` '
      '(columns: ' + '; '.join(f'{c}: `{" ".join(f)}`'
                               for c, f in part.columns.items()) +
      '; rows: ' + '; '.join(f'{r}: `{" ".join(f)}`'
                            for r, f in part.rows.items()) + ').',
      part.notes])


def make_table(parts: Sequence[PaperTable], name: str, budget_name: str,
               seeds: int, options: common.GridOptions, output: str,
               columns: Optional[Sequence[str]] = None,
               rows: Optional[Sequence[str]] = None) -> None:
  """Runs the chosen cells of a table's parts, then writes every finished one.

  Args:
    parts: the table's parts (one section each in the output).
    name: the --table name; its runs live in `options.runs_dir/name`.
    budget_name: 'cpu' or 'paper'.
    seeds: run seeds 0..seeds-1 of each chosen cell.
    options: the grid's options.
    output: the markdown file; the figure goes beside it as .png.
    columns: the columns to run now (None: all).
    rows: the rows to run now (None: all).

  Raises:
    errors.UserInputError: naming a column or row no part has.
  """
  start = time.time()
  all_columns = {c for part in parts for c in part.columns}
  all_rows = {r for part in parts for r in part.rows}
  unknown = sorted(set(columns or ()) - all_columns) + sorted(
      set(rows or ()) - all_rows)
  if unknown:
    raise errors.UserInputError(
        f'{", ".join(unknown)}: not a column or row of {name} (columns: '
        f'{", ".join(sorted(all_columns))}; rows: '
        f'{", ".join(sorted(all_rows))}).')
  ledger_path = ledger_lib.path_for(output)
  ledger = ledger_lib.read(ledger_path)
  runs, seen, held = [], set(), 0
  for part in parts:
    labels = [m.label for m in (*part.measures, *part.ours_only)]
    for column in part.columns:
      for row in part.rows:
        if (columns and column not in columns) or (rows and row not in rows):
          continue
        cell = [run for run in cell_runs(part, name, budget_name, column,
                                         row, seeds) if run.name not in seen]
        seen.update(run.name for run in cell)
        # A run the ledger holds is finished, even where runs/ lost it; so
        # is a cell whose chosen seeds a carried cell holds.
        to_run = ([] if cell and ledger.carries(cell, labels)
                  else ledger.to_run(cell, options.runs_dir, labels))
        held += len(cell) - len(to_run)
        runs += to_run
  if held:
    print(f'{held} chosen runs are held by {ledger_path}: not run again.')
  grid = common.run_grid(runs, options)
  if grid.dry_run:
    return
  for failed in grid.failures():
    print(f'{failed.run.name}: failed ({failed.error}); left out of the '
          'table', flush=True)
  cells = {part.name: collect(part, name, budget_name, options.runs_dir,
                              ledger)
           for part in parts}
  ledger_lib.write(ledger_path, ledger)
  png = os.path.splitext(output)[0] + '.png'
  plot(parts, cells, png)
  common_text = (
      '"ours" is mean ± std (population std) over the seeds each row has '
      '("seeds"), each run\'s number being the mean over the evaluations of '
      'its last rounds where the paper averages its last rounds (said per '
      'table), else its last evaluation; "s/round" the median later-round '
      'seconds of the runs (the machine ran other jobs too: a rough '
      'figure). "paper − baseline" and "ours − baseline" are each row\'s '
      'difference to the table\'s first row in the first measure, ours '
      'paired by seed (over the seeds both rows have); "same sign" compares '
      'them. A row "not run yet" has no finished run: run '
      'the command with `--rows`/`--columns` to add it (finished runs are '
      f'reused). "†": unpaired, the difference of the two rows\' means over '
      'their own seeds, where one row is carried as mean ± std only (see '
      f'below). Figure: `{png}`. Each run\'s numbers, flags, commit and '
      f'date are kept in `{ledger_path}`, so that the table can be '
      'completed on another checkout (bench/ledger.py).')
  sections = []
  for part in parts:
    body = [f'## {part.title}', '', part_text(part, name, budget_name), '']
    for column in part.columns:
      body += [f'### {column}', '', column_table(part, column,
                                                  cells[part.name]), '']
    sections.append('\n'.join(body))
  common.write_result(
      output, ' / '.join(part.title for part in parts),
      f'python -m bench.reproduce --table={name} --budget={budget_name} '
      '--seeds=K [--columns=...] [--rows=...]',
      common_text, '\n'.join(sections), elapsed_s=time.time() - start,
      footer=' '.join(filter(None, [_provenance(cells, grid),
                                    grid.footer()])),
      ran_nothing=not grid.ran_count)


def _provenance(cells: Mapping[str, Mapping[tuple[str, str], Cell]],
                grid: common.Grid) -> str:
  """How many runs the tables hold, which code made them, which are carried
  as mean ± std only, and how many ran now."""
  shown = [cell for part_cells in cells.values()
           for cell in part_cells.values()]
  made_by = collections.Counter(
      commit for cell in shown if cell.carried is None
      for commit in cell.commits)
  carried_from = collections.Counter(
      cell.carried.source for cell in shown if cell.carried is not None
      for _ in cell.seed_ids)
  if not made_by and not carried_from:
    return 'No run has finished yet.'
  parts = []
  if made_by:
    parts.append(f'{sum(made_by.values())} made by the code of ' + ', '.join(
        f'{c} ({n} runs)' for c, n in sorted(made_by.items())))
  parts += [f'{n} carried as mean ± std only ({source})'
            for source, n in sorted(carried_from.items())]
  return (f'The tables hold '
          f'{sum(made_by.values()) + sum(carried_from.values())} finished '
          f'runs: {"; ".join(parts)}. This invocation ran '
          f'{grid.ran_count} of them.')

