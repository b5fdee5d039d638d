"""Seconds per round on the local worker vs. one and two `--workers`.

  python -m bench.remote_speed [--remote_rounds=6] [--remote_model=cnn]

Runs `tasks.mnist_lt --algo=fedavg` (embedded MNIST, a fixed cohort) three
times through the task program, as a user would: on the default local worker,
with `--workers` naming one worker, and with `--workers` naming two workers
that split each round's clients. The workers are `worker_binary` processes on
127.0.0.1 started here; together they get this machine's cores (one worker:
all of them; two: half each), so on one machine the table shows the cost of
the remote path (serialising each round's datasets, merging two partial
aggregates), not a speed-up: that needs workers on other machines. Writes
`results/remote_speed.md`. `bench.speed` calls `markdown_section`.
"""

import os
import tempfile
import time
from typing import Optional

from absl import app
from absl import flags

from bench import common
from tff_imbalance import runtime

_TASK = 'tasks.mnist_lt'
_OUTPUT = 'results/remote_speed.md'


def _task_flags(rounds: int, model: str, clients_per_round: int) -> list[str]:
  return ['--algo=fedavg', f'--model={model}', '--num_clients=20',
          f'--clients_per_round={clients_per_round}', f'--rounds={rounds}',
          f'--eval_every={rounds}', '--local_epochs=1', '--seed=0']


def _start_workers(count: int, cores: int) -> list[runtime.LocalWorker]:
  workers = []
  try:
    for _ in range(count):
      workers.append(runtime.LocalWorker(max(1, cores // count)))
  except Exception:
    for worker in workers:
      worker.stop()
    raise
  return workers


def measure(rounds: int, model: str = 'cnn',
            clients_per_round: int = 10) -> dict:
  """Seconds per round of FedAvg: local worker, one and two remote workers.

  Args:
    rounds: rounds per run (>= 2: the first round is reported apart).
    model: the task's --model.
    clients_per_round: the fixed cohort size.

  Returns:
    {'local' | 'workers_1' | 'workers_2': {'first_round_s', 'round_s'
    (median of the later rounds), 'accuracy', 'command'}} plus 'cores'.
  """
  cores = os.cpu_count() or 1
  base = _task_flags(rounds, model, clients_per_round)
  results = {'cores': cores}
  for name, count in (('local', 0), ('workers_1', 1), ('workers_2', 2)):
    workers = _start_workers(count, cores)
    try:
      extra = ([f'--max_concurrent_clients={cores}'] if not count else [
          '--workers=' + ','.join(f'127.0.0.1:{w.port}' for w in workers)])
      with tempfile.TemporaryDirectory() as output_dir:
        summary = common.run_task(_TASK, base + extra, output_dir)
        first, later = common.round_seconds(output_dir)
      results[name] = dict(
          first_round_s=first, round_s=later, accuracy=summary['accuracy'],
          command=f'python -m {_TASK} {" ".join(base + extra)}')
    finally:
      for worker in workers:
        worker.stop()
  return results


def markdown_section(rounds: int, model: str = 'cnn',
                     clients_per_round: int = 10,
                     results: Optional[dict] = None) -> str:
  """`measure` as a markdown table with a line on how to read it."""
  if results is None:
    results = measure(rounds, model, clients_per_round)
  labels = {'local': 'local worker (default)',
            'workers_1': '--workers: 1 worker on 127.0.0.1',
            'workers_2': '--workers: 2 workers on 127.0.0.1'}
  local = results['local']['round_s']
  rows = [[labels[name], f'{results[name]["round_s"]:.3f}',
           f'{results[name]["round_s"] / local:.2f}x',
           f'{results[name]["first_round_s"]:.2f}',
           f'{results[name]["accuracy"]:.4f}']
          for name in ('local', 'workers_1', 'workers_2')]
  table = common.markdown_table(
      ['execution', 's/round (median, rounds 2+)', 'vs. local',
       'first round s', 'final accuracy'], rows)
  return (f'FedAvg, --model={model}, {clients_per_round} clients per round, '
          f'{rounds} rounds, {results["cores"]} cores shared by every worker '
          f'(each run: `{results["local"]["command"]}` plus the flag in the '
          'first column; workers started by `bench.remote_speed`). Same '
          'machine, so this is the overhead of the remote path, not a '
          'speed-up.\n\n' + table)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  start = time.time()
  section = markdown_section(flags.FLAGS.remote_rounds,
                             flags.FLAGS.remote_model,
                             flags.FLAGS.remote_clients_per_round)
  command = 'python -m bench.remote_speed ' + ' '.join(
      f'--{name}={flags.FLAGS[name].value}'
      for name in ('remote_rounds', 'remote_model', 'remote_clients_per_round')
      if flags.FLAGS[name].present)
  common.write_result(
      _OUTPUT, 'Seconds per round: local worker vs. --workers',
      command.strip(),
      'Each run is the task program in a subprocess; workers are '
      '`worker_binary` processes on 127.0.0.1 (tff_imbalance.runtime).',
      section, elapsed_s=time.time() - start)
  print(f'wrote {_OUTPUT}')


def _define_flags():
  # Defined only when run as a program: bench.speed imports this module and
  # has flags of its own.
  flags.DEFINE_integer('remote_rounds', 6, 'Rounds per run (>= 2).')
  flags.DEFINE_string('remote_model', 'cnn', 'The task\'s --model.')
  flags.DEFINE_integer('remote_clients_per_round', 10, 'Cohort size.')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
