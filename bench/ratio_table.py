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
"""

import os
import subprocess
import tempfile
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
flags.DEFINE_integer('run_timeout', 600, 'Seconds before a run is retried.')

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


def _run(loss_flags, gamma, seed, output_dir):
  rounds = FLAGS.rounds
  flags_ = [*COMMON, *loss_flags, f'--minority_ratio={gamma}',
            f'--model={FLAGS.model}', f'--seed={seed}', f'--rounds={rounds}',
            f'--eval_every={rounds}']
  try:
    return common.run_task('tasks.mnist_lt', flags_, output_dir,
                           timeout_s=FLAGS.run_timeout)
  except subprocess.TimeoutExpired:
    # Seen twice on the shared machine: a run stuck while tracing (AutoGraph
    # fell back to unconverted code while the source was being edited). The
    # same flags give the same run, so one retry loses nothing.
    print(f'retrying after a timeout: {" ".join(flags_)}', flush=True)
    return common.run_task('tasks.mnist_lt', flags_, output_dir + '_retry',
                           timeout_s=FLAGS.run_timeout)


def _seeds_note() -> str:
  if FLAGS.seeds == 1:
    return 'One seed (0), so every "± 0.0000" is no spread measured.'
  return f'Mean ± std over seeds 0..{FLAGS.seeds - 1}.'


def main(argv):
  del argv
  rows = []
  start = time.time()
  with tempfile.TemporaryDirectory() as scratch:
    for gamma in FLAGS.gammas:
      for name, loss_flags in LOSSES:
        minority, auc, cos_mean, cos_min = [], [], [], []
        for seed in range(FLAGS.seeds):
          out = os.path.join(scratch, f'{gamma}_{name}_{seed}')
          summary = _run(loss_flags, gamma, seed, out)
          minority.append(summary['minority_accuracy'])
          auc.append(summary['auc'])
          cosine = summary['released']['monitor_cosine_similarity']
          cos_mean.append(cosine['mean'])
          cos_min.append(cosine['min'])
        rows.append((gamma, name, common.mean_std(minority),
                     common.mean_std(auc), common.mean_std(cos_mean),
                     f'{np.min(cos_min):.4f}'))
        print(' | '.join(str(c) for c in rows[-1]), flush=True)
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
      'beta 0.1, T_Ra 1.25, per-example weights). Ac.M is the mean test '
      f'accuracy over digits {MINORITY}, AUC the one-vs-rest macro AUC, on the '
      'balanced embedded test set (100 per digit), after the last round. '
      '"cos mean" is the per-round cosine similarity between the monitor\'s '
      'estimated and the true composition of the round\'s clients, averaged '
      'over rounds (then mean ± std over seeds); "cos min" the lowest round '
      f'over all seeds. {_seeds_note()} Smaller '
      'than 002 (its MNIST has 6,000 digits per class, 100 clients, 20 per '
      'round, 10 local epochs, LeNet5, 30 rounds).',
      common.markdown_table(
          ['Gamma', 'loss', f'Ac.M ({MINORITY})', 'AUC', 'cos mean',
           'cos min'], rows),
      elapsed_s=time.time() - start)


if __name__ == '__main__':
  app.run(main)
