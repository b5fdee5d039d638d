"""Balanced-accuracy curves and per-class accuracy bars of finished runs.

  python -m tff_imbalance.plot RUN_DIR [RUN_DIR...] --output=FILE.png

draws, on one figure, every run's balanced accuracy against the round (from
its `metrics.csv`) and, per class, every run's final test accuracy as grouped
bars, classes sorted by training count from head to tail (from its
`summary.json`: `per_class_accuracy`, `train_class_counts`), both read by
`report.read_run`. The runner calls `write_run_plots` at the end of a run for
`curves.png`, `per_class.png` and, when the task recorded the split
(`data.client_class_counts` in summary.json), `partition.png`: the clients x
classes example counts as a heatmap, so a reader sees what a partition is.

Figures are drawn on matplotlib's Agg canvas through the object-oriented API,
never through pyplot, so importing this module changes no global backend
(a notebook that imports the runner keeps its own).
"""

import argparse
import dataclasses
import os
import sys
from typing import Optional, Sequence

from matplotlib import colors
from matplotlib import figure as figure_lib
from matplotlib import ticker
from matplotlib.backends import backend_agg
import numpy as np

from tff_imbalance import errors
from tff_imbalance import report

CURVES_FILE = 'curves.png'
PER_CLASS_FILE = 'per_class.png'
PARTITION_FILE = 'partition.png'
# Above this many cells the counts are not printed in the heatmap.
_ANNOTATED_CELLS = 400


@dataclasses.dataclass(frozen=True)
class RunRecord:
  """What the plots need from one run directory.

  Attributes:
    name: the label of the run in legends.
    eval_rounds: the rounds with an evaluation.
    balanced_accuracy: balanced test accuracy at those rounds.
    per_class_accuracy: final test accuracy per class (None entries for
      classes absent from the test set), or None without a summary.
    train_class_counts: training examples per class, or None.
    client_class_counts: the split, examples of each class (columns) on each
      client (rows), or None when the task did not record it.
  """
  name: str
  eval_rounds: tuple[int, ...]
  balanced_accuracy: tuple[float, ...]
  per_class_accuracy: Optional[tuple[Optional[float], ...]]
  train_class_counts: Optional[tuple[int, ...]]
  client_class_counts: Optional[tuple[tuple[int, ...], ...]] = None


def load_run(run_dir: str, name: Optional[str] = None) -> RunRecord:
  """What the plots need of a run directory (read by `report.read_run`).

  Args:
    run_dir: a run's --output_dir.
    name: the legend label (default: the directory's name).

  Returns:
    The run's `RunRecord`.

  Raises:
    errors.UserInputError: if the directory has no readable metrics.csv.
  """
  results = report.read_run(run_dir)
  eval_rounds, balanced_accuracy = results.curve('balanced_accuracy')
  summary = results.summary or {}
  per_class = summary.get('per_class_accuracy')
  counts = summary.get('train_class_counts')
  split = (summary.get('data') or {}).get('client_class_counts')
  return RunRecord(
      name=name or os.path.basename(os.path.normpath(run_dir)),
      eval_rounds=eval_rounds,
      balanced_accuracy=balanced_accuracy,
      per_class_accuracy=None if per_class is None else tuple(per_class),
      train_class_counts=None if counts is None else tuple(counts),
      client_class_counts=None if split is None else tuple(
          tuple(row) for row in split))


def _new_figure(width: float, height: float, panels: int = 1):
  figure = figure_lib.Figure(figsize=(width, height), layout='constrained')
  backend_agg.FigureCanvasAgg(figure)
  return figure, figure.subplots(1, panels, squeeze=False)[0]


def draw_curves(axes, runs: Sequence[RunRecord]) -> None:
  """Balanced accuracy against the round, one line per run."""
  for run in runs:
    axes.plot(run.eval_rounds, run.balanced_accuracy, marker='o',
              markersize=3, label=run.name)
  axes.set_xlabel('round')
  axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  axes.set_ylabel('balanced accuracy')
  axes.set_ylim(0.0, 1.0)
  axes.grid(alpha=0.3)
  axes.legend(fontsize='small')


def draw_per_class(axes, runs: Sequence[RunRecord]) -> None:
  """Final per-class accuracy as grouped bars, head classes first.

  Classes are ordered by the first run's training counts (descending, ties in
  class order); each tick shows the class and its count.

  Raises:
    errors.UserInputError: if a run lacks per-class results or the runs have
      different numbers of classes.
  """
  for run in runs:
    if run.per_class_accuracy is None or run.train_class_counts is None:
      raise errors.UserInputError(
          f'run {run.name} has no per_class_accuracy and train_class_counts '
          'in its summary.json; plot finished task runs.')
  num_classes = {len(run.per_class_accuracy) for run in runs}
  if len(num_classes) != 1:
    raise errors.UserInputError(
        f'the runs have different numbers of classes ({sorted(num_classes)}); '
        'plot runs of one task together.')
  counts = np.asarray(runs[0].train_class_counts)
  order = np.argsort(-counts, kind='stable')
  width = 0.8 / len(runs)
  positions = np.arange(len(order))
  for i, run in enumerate(runs):
    accuracy = [run.per_class_accuracy[c] for c in order]
    axes.bar(positions + (i - (len(runs) - 1) / 2) * width,
             [np.nan if a is None else a for a in accuracy], width,
             label=run.name)
  axes.set_xticks(positions)
  axes.set_xticklabels([f'{c}\n{counts[c]}' for c in order],
                       fontsize='x-small' if len(order) > 20 else 'small')
  axes.set_xlabel('class (training count), head to tail')
  axes.set_ylabel('test accuracy')
  axes.set_ylim(0.0, 1.0)
  axes.grid(axis='y', alpha=0.3)
  axes.legend(fontsize='small')


def draw_partition(axes, client_class_counts: Sequence[Sequence[int]]) -> None:
  """Heatmap of a split: clients as rows, classes as columns.

  Colour is the count on a log scale (a long tail spans 1 to thousands);
  empty cells stay blank, so missing classes stand out. Small splits print
  each count in its cell.
  """
  counts = np.asarray(client_class_counts, dtype=np.int64)
  shown = np.ma.masked_equal(counts, 0)
  norm = colors.LogNorm(vmin=1, vmax=max(int(counts.max()), 2))
  image = axes.imshow(shown, aspect='auto', cmap='viridis', norm=norm,
                      interpolation='nearest')
  axes.figure.colorbar(image, ax=axes, label='examples')
  if counts.size <= _ANNOTATED_CELLS:
    for (client, c), n in np.ndenumerate(counts):
      if n:
        # Dark text on the bright (large) cells, light on the dark ones.
        axes.text(c, client, str(n), ha='center', va='center',
                  fontsize='xx-small',
                  color='black' if norm(n) > 0.6 else 'white')
  axes.set_xlabel('class')
  axes.set_ylabel('client')
  axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  axes.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  axes.set_title(f'{counts.shape[0]} clients, {int(counts.sum())} examples',
                 fontsize='small')


def _per_class_width(runs: Sequence[RunRecord]) -> float:
  return max(6.0, 0.25 * len(runs[0].per_class_accuracy or ()) * len(runs))


def write_comparison(runs: Sequence[RunRecord], path: str) -> None:
  """Curves and per-class bars of several runs side by side in one PNG.

  The per-class panel is left out unless every run has a summary.json (a run
  still going or killed has only its metrics.csv).
  """
  with_classes = all(r.per_class_accuracy is not None for r in runs)
  panels = 2 if with_classes else 1
  figure, axes = _new_figure(6.0 + (_per_class_width(runs) if with_classes
                                    else 0.0), 4.5, panels)
  draw_curves(axes[0], runs)
  if with_classes:
    draw_per_class(axes[1], runs)
  _save(figure, path)


def write_run_plots(run_dir: str) -> list[str]:
  """`curves.png`, and with a summary `per_class.png` and `partition.png`.

  Returns:
    The paths written.
  """
  run = load_run(run_dir)
  figure, axes = _new_figure(6.0, 4.5)
  draw_curves(axes[0], [run])
  written = [os.path.join(run_dir, CURVES_FILE)]
  _save(figure, written[-1])
  if run.per_class_accuracy is not None and run.train_class_counts is not None:
    figure, axes = _new_figure(_per_class_width([run]), 4.5)
    draw_per_class(axes[0], [run])
    written.append(os.path.join(run_dir, PER_CLASS_FILE))
    _save(figure, written[-1])
  if run.client_class_counts:
    rows, columns = np.shape(run.client_class_counts)
    figure, axes = _new_figure(min(16.0, 2.0 + 0.45 * columns),
                               min(12.0, 1.5 + 0.3 * rows))
    draw_partition(axes[0], run.client_class_counts)
    written.append(os.path.join(run_dir, PARTITION_FILE))
    _save(figure, written[-1])
  return written


def _save(figure, path: str) -> None:
  try:
    figure.savefig(path, dpi=100)
  except OSError as e:
    raise errors.UserInputError(
        f'cannot write {path}: {e.strerror}; choose a writable --output.'
    ) from None


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
  # argparse, not absl flags: the runner imports this module, and flags
  # defined here would join every task's flag set.
  parser = argparse.ArgumentParser(
      prog='python -m tff_imbalance.plot',
      description='Balanced-accuracy curves and per-class accuracy bars of '
      'one or more run directories (their --output_dir), in one PNG.')
  parser.add_argument('run_dirs', nargs='+', metavar='RUN_DIR')
  parser.add_argument('--output', required=True, metavar='FILE.png',
                      help='The PNG to write.')
  return parser.parse_args(argv)


def _unique_names(run_dirs: Sequence[str]) -> list[str]:
  names = [os.path.basename(os.path.normpath(d)) for d in run_dirs]
  if len(set(names)) < len(names):
    return [os.path.normpath(d) for d in run_dirs]
  return names


def main(argv: Sequence[str]) -> int:
  """Writes the comparison figure; returns the exit status."""
  args = _parse_args(argv)
  try:
    runs = [load_run(d, name) for d, name in
            zip(args.run_dirs, _unique_names(args.run_dirs))]
    write_comparison(runs, args.output)
  except errors.UserInputError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'wrote {args.output}')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
