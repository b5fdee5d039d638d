"""Fed-Focal sweep: the shape of 000's tables 5 (gamma) and 6 (psi).

  python -m bench.focal_sweep --seeds=3 --rounds=30

Runs `tasks.mnist_lt` on the embedded MNIST with Fed-Focal's "unbalanced"
profile (digits 0,1,2,9 at 1:100) for cross-entropy FedAvg, focal loss with
gamma in 1..5 (psi = 0, uniform selection), and Fed-Focal (gamma = 2) with psi
in {0, 0.2, 0.6, 0.8, 1.0}, each over several seeds, and writes a markdown
table of balanced accuracy and minority-class accuracy (mean and std) to
`results/focal_sweep.md`. Every run is a subprocess with the same flags but
the varied ones, so the table is reproducible run by run.

  python -m bench.focal_sweep --configs=psi_improvement --seeds=3 --rounds=20

compares the two readings of psi's "improved" client (`--psi_improvement`,
docs/fedfocal.md) at psi 0.8 and 1.0 beside uniform sampling, with the mean
share of each cohort counted improved under the run's reading and under the
local one (`summary.json` `selection`), into
`results/focal_psi_improvement.md`.

Runs live in `--runs_dir` and are reused when their flags match
(`bench.common.run_grid`); `--parallel`, `--retries`, `--dry_run` as there.
"""

import time

from absl import app
from absl import flags

from bench import common

FLAGS = flags.FLAGS
flags.DEFINE_integer('seeds', 3, 'Seeds per configuration (0..seeds-1).')
flags.DEFINE_integer('rounds', 30, 'Rounds per run.')
flags.DEFINE_enum('configs', 'all', ['all', 'psi_improvement'],
                  'all: tables 5-6 (gamma, psi); psi_improvement: the global '
                  'and local readings of psi selection.')
flags.DEFINE_string('output', None,
                    'Markdown table (default: results/focal_sweep.md, or '
                    'results/focal_psi_improvement.md).')
common.define_grid_flags(runs_dir='runs/bench/focal_sweep')

# 000 sec 4.2: 10 clients, 10% sampled per round in their VIRTUAL setting; we
# sample 5 of 20 so that psi has room to keep and fill.
COMMON = ['--profile=unbalanced', '--minority_ratio=100',
          '--minority_classes=0,1,2,9', '--partition=iid', '--num_clients=20',
          '--clients_per_round=5', '--model=mlp', '--local_epochs=1',
          '--batch_size=32', '--client_lr=0.05',
          # The sweep predates the server's auxiliary hold-out (Ratio Loss):
          # keep its whole training pool on the clients, as it was run.
          '--aux_per_class=0']

CONFIGS = (
    [('CE (FedAvg)', ['--algo=fedavg', '--loss=ce'])] +
    [(f'focal gamma={g}, psi=0', ['--algo=fedavg', '--loss=focal',
                                  f'--focal_gamma={g}'])
     for g in (1, 2, 3, 4, 5)] +
    [(f'Fed-Focal gamma=2, psi={p}', ['--algo=fedfocal', '--focal_gamma=2',
                                      f'--psi={p}'])
     for p in (0.0, 0.2, 0.6, 0.8, 1.0)])

PSI_IMPROVEMENT_CONFIGS = (
    [('Fed-Focal gamma=2, psi=0 (uniform)', ['--algo=fedfocal', '--psi=0'])] +
    [(f'Fed-Focal gamma=2, psi={p}, {reading}',
      ['--algo=fedfocal', f'--psi={p}', f'--psi_improvement={reading}'])
     for p in (0.8, 1.0) for reading in ('global', 'local')])


def _runs_by_config(configs) -> dict[str, list[common.Run]]:
  return {name: common.seeded_runs(
      f'{FLAGS.configs}/{common.slug(name)}', 'tasks.mnist_lt',
      (*COMMON, *config_flags, f'--rounds={FLAGS.rounds}',
       f'--eval_every={FLAGS.rounds}'), FLAGS.seeds)
          for name, config_flags in configs}


def _improved_fractions(summaries):
  """Mean share of a cohort counted improved: the run's reading, local."""
  cells = []
  for key in ('improved_fraction', 'local_improved_fraction'):
    values = [s['selection'][key] for s in summaries
              if s.get('selection', {}).get(key) is not None]
    cells.append(common.mean_std(values) if values else '-')
  return cells


def main(argv):
  del argv
  start = time.time()
  improvement = FLAGS.configs == 'psi_improvement'
  runs = _runs_by_config(PSI_IMPROVEMENT_CONFIGS if improvement else CONFIGS)
  grid = common.run_grid(common.all_runs(runs), common.grid_options())
  if grid.dry_run:
    return
  rows = []
  for name, summaries in common.summaries_by_row(grid, runs).items():
    rows.append((name,
                 common.mean_std([s['balanced_accuracy'] for s in summaries]),
                 common.mean_std([s['minority_accuracy'] for s in summaries]),
                 *(_improved_fractions(summaries) if improvement else ())))
    print(f'{name}: {" | ".join(rows[-1][1:])}', flush=True)
  command = ' '.join(['python -m bench.focal_sweep', f'--seeds={FLAGS.seeds}',
                      f'--rounds={FLAGS.rounds}'] +
                     (['--configs=psi_improvement'] if improvement else []))
  header = ['configuration', 'balanced accuracy',
            'minority accuracy (0,1,2,9)']
  if improvement:
    header += ['improved share (run\'s reading)', 'improved share (local)']
  output = FLAGS.output or ('results/focal_psi_improvement.md' if improvement
                            else 'results/focal_sweep.md')
  common.write_result(
      output,
      'Fed-Focal sweep on unbalanced MNIST (digits 0,1,2,9 at 1:100)',
      command,
      f'Shared flags: `{" ".join(COMMON)}`. Balanced test set of the embedded '
      f'MNIST; minority accuracy is Ac.M over digits 0,1,2,9. Mean ± std over '
      f'seeds 0..{FLAGS.seeds - 1}.',
      common.markdown_table(header, rows),
      elapsed_s=time.time() - start, footer=grid.footer())


if __name__ == '__main__':
  app.run(main)
