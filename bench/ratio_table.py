"""Ratio Loss vs CE vs focal loss with the composition monitor: 002's Table 2.

  python -m bench.ratio_table --seeds=2 --rounds=20

Runs `tasks.mnist_lt` on the embedded MNIST with k-minority classes at
Gamma in {10, 20, 50, 100} (digits 0,1,2,9 hold 1/Gamma of a majority
digit, so Gamma is 002's global imbalance max_i N_i / min_i N_i), split over
Dirichlet(alpha * pi) clients (most hold a few classes: the spirit of 002 sec
4.2, where each client holds a random number of classes). For each Gamma it
trains FedAvg with cross-entropy, with focal loss (gamma 2, alpha 1) and with
Ratio Loss (alpha 1, beta 0.1, T_Ra 1.25), the first two with `--monitor`
as a diagnostic, and reports minority-class accuracy (Ac.M over 0,1,2,9),
AUC, and the mean and minimum over rounds of the monitor's per-round cosine
similarity between estimated and true composition. Every run holds out the
same 32 auxiliary examples per class for the server.

Runs live in `--runs_dir` and are reused when their flags match
(`bench.common.run_grid`); a run past `--run_timeout` is killed and retried
(`--retries`): seen twice on the shared machine, a run stuck while tracing
(AutoGraph fell back to unconverted code while the source was being edited).
"""

import time

from absl import app
from absl import flags
import numpy as np

from bench import common

FLAGS = flags.FLAGS
flags.DEFINE_integer('seeds', 2, 'Seeds per configuration (0..seeds-1).')
flags.DEFINE_integer('rounds', 20, 'Rounds per run.')
flags.DEFINE_enum('model', 'mlp', ['mlp', 'cnn'], 'Model for every run.')
flags.DEFINE_list('gammas', ['10', '20', '50', '100'],
                  'Global imbalance ratios Gamma.')
flags.DEFINE_string('output', 'results/ratio_table.md', 'Markdown table.')
common.define_grid_flags(runs_dir='runs/bench/ratio_table', timeout_s=600)

MINORITY = '0,1,2,9'
COMMON = ['--profile=unbalanced', f'--minority_profile_classes={MINORITY}',
          f'--minority_classes={MINORITY}', '--partition=dirichlet',
          '--dirichlet_alpha=1.0', '--num_clients=20', '--clients_per_round=10',
          '--local_epochs=1', '--batch_size=32', '--client_lr=0.05',
          '--aux_per_class=32']

LOSSES = (
    ('CE', ['--algo=fedavg', '--loss=ce', '--monitor']),
    ('focal', ['--algo=fedavg', '--loss=focal', '--focal_gamma=2',
               '--monitor']),
    ('ratio', ['--algo=ratio']),
)


def _runs_by_row() -> dict[tuple[str, str], list[common.Run]]:
  """(Gamma, loss) -> its runs over the seeds."""
  return {(gamma, name): common.seeded_runs(
      f'gamma{gamma}/{name}', 'tasks.mnist_lt',
      (*COMMON, *loss_flags, f'--minority_ratio={gamma}',
       f'--model={FLAGS.model}', f'--rounds={FLAGS.rounds}',
       f'--eval_every={FLAGS.rounds}'), FLAGS.seeds)
          for gamma in FLAGS.gammas for name, loss_flags in LOSSES}


def _row(gamma: str, loss: str, summaries: list[dict]) -> tuple:
  cosines = [s['released']['monitor_cosine_similarity'] for s in summaries]
  return (gamma, loss,
          common.mean_std([s['minority_accuracy'] for s in summaries]),
          common.mean_std([s['auc'] for s in summaries]),
          common.mean_std([c['mean'] for c in cosines]),
          f'{np.min([c["min"] for c in cosines]):.4f}')


def _seeds_note() -> str:
  if FLAGS.seeds == 1:
    return 'One seed (0), so every "± 0.0000" is no spread measured.'
  return f'Mean ± std over seeds 0..{FLAGS.seeds - 1}.'


def main(argv):
  del argv
  start = time.time()
  runs = _runs_by_row()
  grid = common.run_grid(common.all_runs(runs), common.grid_options())
  if grid.dry_run:
    return
  rows = [_row(*row, summaries)
          for row, summaries in common.summaries_by_row(grid, runs).items()]
  command = ' '.join(['python -m bench.ratio_table', f'--seeds={FLAGS.seeds}',
                      f'--rounds={FLAGS.rounds}', f'--model={FLAGS.model}'])
  common.write_result(
      FLAGS.output,
      'Ratio Loss, focal loss and CE with the composition monitor (002 Table 2)',
      command,
      f'Shared flags: `{" ".join(COMMON)} --model={FLAGS.model} '
      f'--rounds={FLAGS.rounds}`; Gamma is `--minority_ratio` (digits '
      f'{MINORITY} keep 1/Gamma of a majority digit: after the 32 auxiliary '
      'examples per class leave the pool, 368 per majority digit and '
      'int(368/Gamma) per minority digit, i.e. 36/18/7/3). CE and focal are '
      'FedAvg with `--loss` and `--monitor`; ratio is `--algo=ratio` (alpha 1, '
      'beta 0.1, T_Ra 1.25, per-example weights normalised to mean 1, '
      '`--ratio_normalize=mean`). Ac.M is the mean test '
      f'accuracy over digits {MINORITY}, AUC the one-vs-rest macro AUC, on the '
      'balanced embedded test set (100 per digit), after the last round. '
      '"cos mean" is the per-round cosine similarity between the monitor\'s '
      'estimated and the true composition of the round\'s update (each '
      'client\'s examples weighted by its example count, as TFF aggregates), '
      'averaged '
      'over rounds (then mean ± std over seeds); "cos min" the lowest round '
      f'over all seeds. {_seeds_note()} Smaller '
      'than 002 (its MNIST has 6,000 digits per class, 100 clients, 20 per '
      'round, 10 local epochs, LeNet5, 30 rounds).',
      common.markdown_table(
          ['Gamma', 'loss', f'Ac.M ({MINORITY})', 'AUC', 'cos mean',
           'cos min'], rows),
      elapsed_s=time.time() - start, footer=grid.footer())


if __name__ == '__main__':
  app.run(main)
