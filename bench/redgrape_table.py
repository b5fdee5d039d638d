"""RedGrape vs FedAvg, Fed-Focal, Ratio Loss (and CReFF) on MNIST-LT: 004 T. 1.

  python -m bench.redgrape_table --seeds=3 --rounds=20 --parallel=2 \
      --algos=fedavg,fedfocal,ratio,redgrape,creff

Runs `tasks.mnist_lt` on the embedded MNIST (500 real digits per class) with
004's protocol at a CPU budget: long tail n_c = n_max IR^(-c/9) at IR 10, 50
and 100, Dir(1.0 * pi) label skew over 10 equal-size clients, all of them in
every round, local SGD with momentum 0.9; every run holds out the same 32
auxiliary examples per class for the server (Ratio Loss's monitor needs them;
004 takes them the same way). Reports overall and tail-class accuracy (the 30%
of classes with the fewest training examples, digits 7-9: 004's Test/Tail_Acc)
on the balanced held-out test set after the last round, mean ± std over
seeds, and RedGrape's steady-state time per round relative to FedAvg's.

Runs live in `--runs_dir` (alias `--work_dir`) and are reused when their flags
match (`bench.common.run_grid`); `--parallel`, `--retries`, `--run_timeout`,
`--dry_run` as there. A configuration whose runs failed shows "not run".
"""

import statistics
import time

from absl import app
from absl import flags

from bench import common
from tff_imbalance.learning import registry

FLAGS = flags.FLAGS
flags.DEFINE_integer('seeds', 3, 'Seeds per configuration (0..seeds-1).')
flags.DEFINE_integer('rounds', 20, 'Rounds per run.')
flags.DEFINE_integer('local_epochs', 2, 'Local epochs (004: 5).')
flags.DEFINE_float('client_lr', 0.05, 'Local learning rate (004: 0.01).')
flags.DEFINE_enum('model', 'mlp', ['mlp', 'cnn_dropout', 'cnn'],
                  'Model for every run (004: cnn_dropout).')
flags.DEFINE_list('imbalance_ratios', ['10', '50', '100'], 'IR values.')
flags.DEFINE_list('algos', ['fedavg', 'fedfocal', 'ratio', 'redgrape'],
                  'Algorithms (rows); unregistered ones are skipped and named.')
flags.DEFINE_string('output', 'results/redgrape_table.md', 'Markdown table.')
common.define_grid_flags(runs_dir='runs/bench/redgrape_table')
flags.DEFINE_alias('work_dir', 'runs_dir')

COMMON = ['--profile=longtail', '--partition=dirichlet',
          '--dirichlet_alpha=1.0', '--num_clients=10',
          '--clients_per_round=10', '--batch_size=64', '--client_momentum=0.9',
          '--aux_per_class=32', '--redgrape_lambda=0.1',
          '--redgrape_threshold=8']
# Fed-Focal's psi selection needs a choice among clients; with full
# participation it keeps all of them, so fedfocal is the focal loss here.
ALGO_FLAGS = {'fedfocal': ['--psi=0']}


def _runs_by_cell(algos) -> dict[tuple[str, str], list[common.Run]]:
  """(IR, algorithm) -> its runs over the seeds."""
  return {(ratio, algo): common.seeded_runs(
      f'ir{ratio}/{algo}', 'tasks.mnist_lt',
      (*COMMON, *ALGO_FLAGS.get(algo, []), f'--algo={algo}',
       f'--imbalance_ratio={ratio}', f'--model={FLAGS.model}',
       f'--local_epochs={FLAGS.local_epochs}',
       f'--client_lr={FLAGS.client_lr}', f'--rounds={FLAGS.rounds}',
       f'--eval_every={FLAGS.rounds}'), FLAGS.seeds)
          for ratio in FLAGS.imbalance_ratios for algo in algos}


def _command():
  return ' '.join([
      'python -m bench.redgrape_table', f'--seeds={FLAGS.seeds}',
      f'--rounds={FLAGS.rounds}', f'--local_epochs={FLAGS.local_epochs}',
      f'--client_lr={FLAGS.client_lr}', f'--model={FLAGS.model}',
      f'--imbalance_ratios={",".join(FLAGS.imbalance_ratios)}',
      f'--algos={",".join(FLAGS.algos)}', f'--parallel={FLAGS.parallel}'])


def _description(skipped, time_ratios, counts):
  skipped_note = (f' Not run (not registered when this ran): '
                  f'{", ".join(skipped)}.' if skipped else '')
  ratio_note = ''
  if time_ratios:
    ratio_note = (
        f' RedGrape / FedAvg time per round (median of rounds 2..R of each '
        f'run\'s metrics.csv round_seconds, paired by IR and seed): median '
        f'{statistics.median(time_ratios):.2f}, range '
        f'{min(time_ratios):.2f}-{max(time_ratios):.2f} over '
        f'{len(time_ratios)} pairs, '
        f'on a CPU shared with other jobs ({FLAGS.parallel} of these runs at '
        'once besides other users\' jobs), so only roughly comparable.')
  return (
      f'Shared flags: `{" ".join(COMMON)}` plus `--model={FLAGS.model} '
      f'--local_epochs={FLAGS.local_epochs} --client_lr={FLAGS.client_lr} '
      f'--rounds={FLAGS.rounds}`; fedfocal adds `--psi=0` (full '
      'participation: psi selection has nothing to choose); creff uses its '
      'defaults (100 features per class, 100 matching steps at lr 0.1, a '
      'fresh classifier re-trained for 300 epochs of mini-batch SGD, batch '
      '32, lr 0.01). 004 Table 1 uses '
      'the full MNIST (about 6,000 digits per class before the long tail), '
      'the conv-dropout CNN, 5 local epochs, learning rate 0.01 and 200 '
      'rounds, and averages the last 10 rounds; this table uses the embedded '
      'MNIST (500 digits per class: 100 per digit form the balanced test '
      'set, 32 per class the server\'s auxiliary set, the rest is the '
      f'clients\'; training examples per class, seed 0: {counts}), fewer '
      'rounds and the final round only, to fit a shared 2-core CPU. '
      '"overall" is test '
      'accuracy on the balanced held-out test set (100 per digit), "tail" '
      'the mean accuracy over the 30% of classes with the fewest training '
      f'examples (digits 7-9), mean ± std over seeds 0..{FLAGS.seeds - 1}.'
      f'{ratio_note}{skipped_note}')


def _time_ratios(grid, redgrape_runs, fedavg_runs) -> list[float]:
  """RedGrape / FedAvg steady-state seconds per round, paired by seed."""
  ratios = []
  for redgrape, fedavg in zip(redgrape_runs, fedavg_runs):
    if grid[redgrape.name].summary and grid[fedavg.name].summary:
      ratios.append(common.round_seconds(grid[redgrape.name].run_dir)[1] /
                    common.round_seconds(grid[fedavg.name].run_dir)[1])
  return ratios


def _table(grid, runs, algos):
  """(markdown table, time ratios, training counts per IR)."""
  header = ['algorithm'] + [
      f'IR {r} {what}' for r in FLAGS.imbalance_ratios
      for what in ('overall', 'tail')]
  rows, time_ratios, counts = [], [], []
  for algo in algos:
    row = [algo]
    for ratio in FLAGS.imbalance_ratios:
      cell_runs = runs[ratio, algo]
      if any(grid[run.name].summary is None for run in cell_runs):
        row += ['not run', 'not run']
        continue
      summaries = grid.summaries([run.name for run in cell_runs])
      if algo == algos[0]:
        counts.append(f'IR {ratio}: {summaries[0]["train_class_counts"]}')
      row += [common.mean_std([s['accuracy'] for s in summaries]),
              common.mean_std([s['minority_accuracy'] for s in summaries])]
      if algo == 'redgrape' and (ratio, 'fedavg') in runs:
        time_ratios += _time_ratios(grid, cell_runs, runs[ratio, 'fedavg'])
    rows.append(row)
  return common.markdown_table(header, rows), time_ratios, '; '.join(counts)


def main(argv):
  del argv
  algos = [a for a in FLAGS.algos if a in registry.ALGORITHMS]
  skipped = [a for a in FLAGS.algos if a not in registry.ALGORITHMS]
  start = time.time()
  runs = _runs_by_cell(algos)
  grid = common.run_grid(common.all_runs(runs), common.grid_options())
  if grid.dry_run:
    return
  table, time_ratios, counts = _table(grid, runs, algos)
  common.write_result(
      FLAGS.output,
      'RedGrape and its baselines on MNIST-LT (004 Table 1 protocol, CPU '
      'scale)', _command(), _description(skipped, time_ratios, counts),
      table, elapsed_s=time.time() - start, footer=grid.footer())


if __name__ == '__main__':
  app.run(main)
