"""Every registered method on identical splits, seeds and budgets: one table.

  python -m bench.quality --protocol=mnist_lt_ir100 --seeds=3
  python -m bench.quality --protocol=all --quick

For a protocol (a task and its data flags: the same profile, partition and
seed give every method the same clients), it runs every algorithm of the
registry (or `--algos`) for each seed as a subprocess of the task program, the
command a user would type, and writes `results/<protocol>.md` (mean ± std over
seeds of overall, balanced, few-shot and minority accuracy and macro-F1) and
`results/<protocol>.png` (test accuracy against rounds, mean over seeds, one
curve per method).

Protocols:
  mnist_lt_ir{10,50,100}  004 table 1: long tail IR 10/50/100, Dir(1.0),
                          10 clients, full participation (embedded MNIST).
  mnist_unbalanced        000: digits 0,1,2,9 cut to 1:100, 20 iid clients,
                          5 per round.
  mnist_tau               003: long tail IR 100, tau-sampling (tau=2) onto 10
                          clients, full participation.
  femnist_sample          the real FEMNIST sample of ../shared/data (105
                          natural writers, 10 per round), balanced test set.

`--quick` (1 seed unless --seeds is given, few rounds, the MLP) proves the
whole matrix in minutes; the full budget is stated in each table. Runs live
in `--runs_dir/<protocol>/<algo>/seed<k>` and are reused when their flags
match (`bench.common.run_grid`), so an interrupted benchmark continues where
it stopped; `--parallel` (alias `--jobs`), `--retries`, `--run_timeout`,
`--dry_run` as there.
"""

import dataclasses
import os
import sys
import time
from typing import Sequence

from absl import app
from absl import flags
import matplotlib

matplotlib.use('Agg')
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from bench import common
from tff_imbalance import report

FLAGS = flags.FLAGS

_FEMNIST_SAMPLE = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), '..', 'shared', 'data',
                               'femnist-leaf-sample')

flags.DEFINE_string('protocol', None, 'Protocol name, or "all".')
# What a --quick table is (issue 16): it proves every method runs end to end
# on every protocol, it does not say which works.
_SMOKE_LABEL = ('**Smoke test, not a result**: a few rounds of an MLP on the '
                'embedded MNIST show that every method runs end to end; the '
                'real-scale tables are `results/reproduce_*.md` '
                '(`python -m bench.reproduce`).')
flags.DEFINE_integer('seeds', None, 'Seeds 0..n-1 (default 3; 1 if --quick).')
flags.DEFINE_bool('quick', False, 'Few rounds and the MLP: the whole matrix '
                  'in minutes.')
flags.DEFINE_integer('rounds', None, 'Override the protocol\'s rounds.')
flags.DEFINE_list('algos', None, 'Algorithms (default: every registered one).')
common.define_grid_flags(runs_dir='runs/quality', parallel=2)
flags.DEFINE_alias('jobs', 'parallel')
flags.DEFINE_string('results_dir', 'results', 'Where tables and plots go.')
flags.DEFINE_string('femnist_dir', _FEMNIST_SAMPLE,
                    'LEAF FEMNIST directory of the femnist_sample protocol.')


@dataclasses.dataclass(frozen=True)
class Protocol:
  """A task, its data and training flags, and its full and quick budgets."""
  description: str
  task: str
  flags: tuple[str, ...]
  rounds: int
  quick_rounds: int
  model: str = 'cnn'
  eval_every: int = 5


_MNIST_LT = ('--source=embedded', '--profile=longtail',
             '--partition=dirichlet', '--dirichlet_alpha=1.0',
             '--num_clients=10', '--clients_per_round=10',
             '--local_epochs=2', '--batch_size=32', '--client_lr=0.05')

PROTOCOLS = {
    **{f'mnist_lt_ir{ir}': Protocol(
        f'MNIST-LT IR {ir}, Dir(1.0) over 10 clients, full participation '
        '(004 table 1 protocol; 2 local epochs instead of 5).',
        'tasks.mnist_lt', _MNIST_LT + (f'--imbalance_ratio={ir}',),
        rounds=30, quick_rounds=4) for ir in (10, 50, 100)},
    'mnist_unbalanced': Protocol(
        'Unbalanced MNIST: digits 0,1,2,9 at 1:100 (000 sec 4.2), 20 iid '
        'clients, 5 per round; minority accuracy over 0,1,2,9.',
        'tasks.mnist_lt',
        ('--source=embedded', '--profile=unbalanced', '--minority_ratio=100',
         '--minority_classes=0,1,2,9', '--partition=iid', '--num_clients=20',
         '--clients_per_round=5', '--local_epochs=1', '--batch_size=32',
         '--client_lr=0.05'),
        rounds=30, quick_rounds=4),
    'mnist_tau': Protocol(
        'MNIST-LT IR 100 with tau-sampling (tau=2) onto 10 clients, full '
        'participation (003 sec 6.1 setting).',
        'tasks.mnist_lt',
        ('--source=embedded', '--profile=longtail', '--imbalance_ratio=100',
         '--partition=tau', '--tau=2', '--num_clients=10',
         '--clients_per_round=10', '--local_epochs=2', '--batch_size=32',
         '--client_lr=0.05'),
        rounds=30, quick_rounds=4),
    'femnist_sample': Protocol(
        'The real FEMNIST sample (105 writers, 62 classes, natural split), 10 '
        'writers per round; balanced test set of at most 200 per class.',
        'tasks.femnist',
        ('--source=leaf', '--clients_per_round=10', '--local_epochs=1',
         '--batch_size=32', '--client_lr=0.05'),
        rounds=30, quick_rounds=3),
}

METRICS = (('accuracy', 'accuracy'), ('balanced_accuracy', 'balanced'),
           ('few_shot_accuracy', 'few-shot'), ('minority_accuracy',
                                               'minority'),
           ('macro_f1', 'macro-F1'))


def _algorithms() -> list[str]:
  # Imported here so that --help stays fast; the registry imports TFF.
  from tff_imbalance.learning import registry  # pylint: disable=g-import-not-at-top
  names = list(registry.algorithm_names())
  if FLAGS.algos:
    unknown = sorted(set(FLAGS.algos) - set(names))
    if unknown:
      raise app.UsageError(f'--algos: unknown {unknown}; registered: '
                           f'{", ".join(names)}.')
    return list(FLAGS.algos)
  return names


def _budget(protocol: Protocol) -> tuple[int, str, int]:
  """(rounds, model, eval_every) of this invocation."""
  if FLAGS.quick:
    rounds = FLAGS.rounds or protocol.quick_rounds
    return rounds, 'mlp', 1
  rounds = FLAGS.rounds or protocol.rounds
  return rounds, protocol.model, min(protocol.eval_every, rounds)


def _run_flags(protocol: Protocol, algo: str) -> list[str]:
  """A run's flags but --seed."""
  rounds, model, eval_every = _budget(protocol)
  from tff_imbalance.learning import registry  # pylint: disable=g-import-not-at-top
  if registry.get(algo).dense_models_only and not model.startswith('mlp'):
    model = 'mlp100'  # VIRTUAL's Gaussian weights need Dense layers (000).
  run_flags = [*protocol.flags, f'--algo={algo}', f'--model={model}',
               f'--rounds={rounds}', f'--eval_every={eval_every}']
  if protocol.task == 'tasks.femnist':
    run_flags.append(f'--data_dir={FLAGS.femnist_dir}')
  return run_flags


def _accuracy_curve(run_dir: str) -> tuple[tuple[int, ...],
                                            tuple[float, ...]]:
  return report.read_run(run_dir).curve('accuracy')


def _local_training_note(summary: dict) -> str:
  spread = summary.get('accuracy_std')
  return f' (clients ± {spread:.3f})' if spread is not None else ''


def _row(algo: str, outcomes: Sequence[common.Outcome]) -> list[str]:
  failure = next((o.error for o in outcomes if o.summary is None), None)
  if failure is not None:
    return [algo, f'failed: {failure[:120]}'] + [''] * (len(METRICS) - 1)
  runs = [o.summary for o in outcomes]
  cells = [common.mean_std([r[key] for r in runs]) for key, _ in METRICS]
  cells[0] += _local_training_note(runs[0])
  return [algo] + cells


def _table(outcomes_by_algo: dict[str, list[common.Outcome]]) -> str:
  return common.markdown_table(
      ['method'] + [name for _, name in METRICS],
      [_row(algo, outcomes) for algo, outcomes in outcomes_by_algo.items()])


def _plot(protocol_name: str, algos: Sequence[str], run_dirs: dict,
          path: str) -> None:
  fig, ax = plt.subplots(figsize=(7, 4.5))
  # More methods than a default color cycle: 20 colors, alternating styles.
  colors = plt.get_cmap('tab20').colors
  for index, algo in enumerate(algos):
    curves = [_accuracy_curve(d) for d in run_dirs.get(algo, [])
              if os.path.exists(os.path.join(d, 'metrics.csv'))]
    curves = [c for c in curves if c[0]]
    if not curves:
      continue
    length = min(len(c[0]) for c in curves)
    rounds = curves[0][0][:length]
    mean = np.mean([c[1][:length] for c in curves], axis=0)
    ax.plot(rounds, mean, marker='.o^s'[index % 4],
            linestyle=('-', '--')[index % 2],
            color=colors[(2 * index) % 20 + (index // 10) % 2], label=algo)
  ax.set_xlabel('round')
  ax.set_ylabel('test accuracy (balanced test set)')
  ax.set_title(protocol_name)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def run_protocol(name: str, algos: Sequence[str], seeds: int) -> bool:
  """Runs one protocol's matrix, writes its table and plot; True if all ran."""
  protocol = PROTOCOLS[name]
  rounds, model, _ = _budget(protocol)
  start = time.time()
  runs = {algo: common.seeded_runs(
      f'{name}/{algo}', protocol.task, _run_flags(protocol, algo), seeds)
          for algo in algos}
  grid = common.run_grid(common.all_runs(runs), common.grid_options())
  if grid.dry_run:
    return True
  outcomes = {algo: [grid[run.name] for run in algo_runs]
              for algo, algo_runs in runs.items()}
  run_dirs = {algo: [o.run_dir for o in algo_outcomes]
              for algo, algo_outcomes in outcomes.items()}
  os.makedirs(FLAGS.results_dir, exist_ok=True)
  plot_path = os.path.join(FLAGS.results_dir, f'{name}.png')
  _plot(name, algos, run_dirs, plot_path)
  variant = ' --quick' if FLAGS.quick else ''
  command = (f'python -m bench.quality --protocol={name} --seeds={seeds}'
             f'{variant}' + (f' --rounds={FLAGS.rounds}' if FLAGS.rounds
                             else '') +
             (f' --algos={",".join(FLAGS.algos)}' if FLAGS.algos else ''))
  budget = (f'{"Quick variant: " if FLAGS.quick else ""}{rounds} rounds, '
            f'model `{model}`, seeds 0..{seeds - 1}')
  smoke = (_SMOKE_LABEL + ' ') if FLAGS.quick else ''
  common.write_result(
      os.path.join(FLAGS.results_dir, f'{name}.md'),
      f'Quality: {name}', command,
      f'{smoke}{protocol.description} Budget: {budget}. Task flags: '
      f'`python -m {protocol.task} {" ".join(protocol.flags)}` plus --algo, '
      f'--model, --rounds, --seed. Mean ± std over seeds of the final '
      f'evaluation on the balanced test set; few-shot = classes with < 20 '
      f'training examples, minority = the 30% of classes with the fewest '
      f'(the tail). Curves: `{plot_path}`.',
      _table(outcomes), elapsed_s=time.time() - start, footer=grid.footer())
  return not grid.failures()


def main(argv):
  del argv
  if FLAGS.protocol is None:
    raise app.UsageError(f'--protocol is required: one of '
                         f'{", ".join(PROTOCOLS)}, or all.')
  names = list(PROTOCOLS) if FLAGS.protocol == 'all' else [FLAGS.protocol]
  unknown = [n for n in names if n not in PROTOCOLS]
  if unknown:
    raise app.UsageError(f'--protocol must be one of {", ".join(PROTOCOLS)} '
                         f'or all (got {FLAGS.protocol!r}).')
  if 'femnist_sample' in names and not os.path.isdir(FLAGS.femnist_dir):
    raise app.UsageError(
        f'femnist_sample needs the LEAF FEMNIST sample at --femnist_dir='
        f'{FLAGS.femnist_dir}; pass the directory that holds train/ and '
        f'test/.')
  seeds = FLAGS.seeds or (1 if FLAGS.quick else 3)
  algos = _algorithms()
  ok = True
  for name in names:
    ok = run_protocol(name, algos, seeds) and ok
  if not ok:
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
