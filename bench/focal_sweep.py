"""Fed-Focal sweep: the shape of 000's tables 5 (gamma) and 6 (psi).

  python -m bench.focal_sweep --seeds=3 --rounds=30

Runs `tasks.mnist_lt` on the embedded MNIST with Fed-Focal's "unbalanced"
profile (digits 0,1,2,9 at 1:100) for cross-entropy FedAvg, focal loss with
gamma in 1..5 (psi = 0, uniform selection), and Fed-Focal (gamma = 2) with psi
in {0, 0.2, 0.6, 0.8, 1.0}, each over several seeds, and writes a markdown
table of balanced accuracy and minority-class accuracy (mean and std) to
`results/focal_sweep.md`. Every run is a subprocess with the same flags but
the varied ones, so the table is reproducible run by run.
"""

import os
import tempfile
import time

from absl import app
from absl import flags

from bench import common

FLAGS = flags.FLAGS
flags.DEFINE_integer('seeds', 3, 'Seeds per configuration (0..seeds-1).')
flags.DEFINE_integer('rounds', 30, 'Rounds per run.')
flags.DEFINE_string('output', 'results/focal_sweep.md', 'Markdown table.')

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


def _run(config_flags, seed, rounds, output_dir):
  return common.run_task(
      'tasks.mnist_lt', [*COMMON, *config_flags, f'--seed={seed}',
                         f'--rounds={rounds}', f'--eval_every={rounds}'],
      output_dir)


def main(argv):
  del argv
  rows = []
  start = time.time()
  with tempfile.TemporaryDirectory() as scratch:
    for name, config_flags in CONFIGS:
      balanced, minority = [], []
      for seed in range(FLAGS.seeds):
        out = os.path.join(scratch, f'{len(rows)}_{seed}')
        summary = _run(config_flags, seed, FLAGS.rounds, out)
        balanced.append(summary['balanced_accuracy'])
        minority.append(summary['minority_accuracy'])
      rows.append((name, common.mean_std(balanced),
                   common.mean_std(minority)))
      print(f'{name}: balanced {rows[-1][1]}  minority {rows[-1][2]}',
            flush=True)
  command = ' '.join(['python -m bench.focal_sweep', f'--seeds={FLAGS.seeds}',
                      f'--rounds={FLAGS.rounds}'])
  common.write_result(
      FLAGS.output,
      'Fed-Focal sweep on unbalanced MNIST (digits 0,1,2,9 at 1:100)',
      command,
      f'Shared flags: `{" ".join(COMMON)}`. Balanced test set of the embedded '
      f'MNIST; minority accuracy is Ac.M over digits 0,1,2,9. Mean ± std over '
      f'seeds 0..{FLAGS.seeds - 1}.',
      common.markdown_table(
          ['configuration', 'balanced accuracy',
           'minority accuracy (0,1,2,9)'], rows),
      elapsed_s=time.time() - start)


if __name__ == '__main__':
  app.run(main)
