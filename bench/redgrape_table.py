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
"""

from concurrent import futures
import os
import statistics
import tempfile
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
flags.DEFINE_string('work_dir', None,
                    'Keeps every run\'s output; a run whose summary.json is '
                    'already there is read, not rerun (default: a temporary '
                    'directory).')
flags.DEFINE_integer('parallel', 1, 'Task subprocesses run at once.')

COMMON = ['--profile=longtail', '--partition=dirichlet',
          '--dirichlet_alpha=1.0', '--num_clients=10',
          '--clients_per_round=10', '--batch_size=64', '--client_momentum=0.9',
          '--aux_per_class=32', '--redgrape_lambda=0.1',
          '--redgrape_threshold=8']
# Fed-Focal's psi selection needs a choice among clients; with full
# participation it keeps all of them, so fedfocal is the focal loss here.
ALGO_FLAGS = {'fedfocal': ['--psi=0']}


def _flags(algo, ratio, seed):
  return [*COMMON, *ALGO_FLAGS.get(algo, []), f'--algo={algo}',
          f'--imbalance_ratio={ratio}', f'--model={FLAGS.model}',
          f'--local_epochs={FLAGS.local_epochs}',
          f'--client_lr={FLAGS.client_lr}', f'--seed={seed}',
          f'--rounds={FLAGS.rounds}', f'--eval_every={FLAGS.rounds}']


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
      'defaults (100 features per class, 100 matching steps at lr 0.1, 300 '
      're-training steps at --client_lr). 004 Table 1 uses '
      'the full MNIST (about 6,000 digits per class before the long tail), '
      'the conv-dropout CNN, 5 local epochs, learning rate 0.01 and 200 '
      'rounds, and averages the last 10 rounds; this table uses the embedded '
      'MNIST (500 digits per class: 100 per digit form the balanced test '
      'set, 32 per class the server\'s auxiliary set, clients keep 10% for '
      f'validation; training examples per class, seed 0: {counts}), fewer '
      'rounds and the final round only, to fit a shared 2-core CPU. '
      '"overall" is test '
      'accuracy on the balanced held-out test set (100 per digit), "tail" '
      'the mean accuracy over the 30% of classes with the fewest training '
      f'examples (digits 7-9), mean ± std over seeds 0..{FLAGS.seeds - 1}.'
      f'{ratio_note}{skipped_note}')


def _run(algo, ratio, seed, work_dir):
  """(summary, whether this call ran the task rather than reading it)."""
  out = os.path.join(work_dir, f'{ratio}_{algo}_{seed}')
  if os.path.exists(os.path.join(out, 'summary.json')):
    return common.read_summary(out), False
  return common.run_task('tasks.mnist_lt', _flags(algo, ratio, seed), out), True


def _table(work_dir, algos, skipped, elapsed_s):
  header = ['algorithm'] + [
      f'IR {r} {what}' for r in FLAGS.imbalance_ratios
      for what in ('overall', 'tail')]
  rows, time_ratios, counts = [], [], []
  for algo in algos:
    row = [algo]
    for ratio in FLAGS.imbalance_ratios:
      outs = [os.path.join(work_dir, f'{ratio}_{algo}_{seed}')
              for seed in range(FLAGS.seeds)]
      if not all(os.path.exists(os.path.join(o, 'summary.json'))
                 for o in outs):
        row += ['not run', 'not run']
        continue
      summaries = [common.read_summary(o) for o in outs]
      if algo == algos[0]:
        counts.append(f'IR {ratio}: {summaries[0]["train_class_counts"]}')
      row += [common.mean_std([s['accuracy'] for s in summaries]),
              common.mean_std([s['minority_accuracy'] for s in summaries])]
      if algo == 'redgrape':
        for seed, out in enumerate(outs):
          fedavg = os.path.join(work_dir, f'{ratio}_fedavg_{seed}')
          if os.path.exists(os.path.join(fedavg, 'metrics.csv')):
            time_ratios.append(common.round_seconds(out)[1] /
                               common.round_seconds(fedavg)[1])
    rows.append(row)
  common.write_result(
      FLAGS.output,
      'RedGrape and its baselines on MNIST-LT (004 Table 1 protocol, CPU '
      'scale)', _command(),
      _description(skipped, time_ratios, '; '.join(counts)),
      common.markdown_table(header, rows), elapsed_s=elapsed_s)


def main(argv):
  del argv
  algos = [a for a in FLAGS.algos if a in registry.ALGORITHMS]
  skipped = [a for a in FLAGS.algos if a not in registry.ALGORITHMS]
  start = time.time()
  with tempfile.TemporaryDirectory() as scratch:
    work_dir = FLAGS.work_dir or scratch
    os.makedirs(work_dir, exist_ok=True)
    jobs = [(algo, ratio, seed) for ratio in FLAGS.imbalance_ratios
            for algo in algos for seed in range(FLAGS.seeds)]
    with futures.ThreadPoolExecutor(max_workers=FLAGS.parallel) as pool:
      running = [pool.submit(_run, *job, work_dir) for job in jobs]
      read_any = False
      for job, future in zip(jobs, running):
        summary, ran = future.result()
        read_any = read_any or not ran
        print(*job, summary['accuracy'], summary['minority_accuracy'],
              flush=True)
        # Runs read back from --work_dir took the time of an earlier call.
        _table(work_dir, algos, skipped,
               None if read_any else time.time() - start)

if __name__ == '__main__':
  app.run(main)
