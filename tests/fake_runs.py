"""A toy paper table and the outputs a finished run of it leaves, for the
tests of bench.paper_tables and bench.ledger."""

import json
import os

from bench import common
from bench import paper_tables


def toy_table(**changes):
  fields = dict(
      name='t', title='T: a test table', source='paper 9 table 1',
      task='tasks.mnist_lt', shared_flags=('--source=idx',),
      rows={'FedAvg': ('--algo=fedavg',), 'A': ('--algo=a',),
            'B': ('--algo=b',)},
      columns={'IR 10': ('--imbalance_ratio=10',)},
      measures=(paper_tables.Measure(
          'accuracy', paper_tables.last_rounds_mean('accuracy'),
          {('FedAvg', 'IR 10'): 90.0, ('A', 'IR 10'): 92.0,
           ('B', 'IR 10'): 91.0}),),
      budgets={'cpu': paper_tables.Budget(4, 1, 'mlp', 'small')},
      last_rounds=2, notes='')
  fields.update(changes)
  return paper_tables.PaperTable(**fields)


def finish_run(runs_dir, run, accuracies_by_round,
               seconds=(3.0, 1.0, 1.0, 1.0)):
  """Writes what a finished run leaves: record, summary, metrics.csv."""
  run_dir = os.path.join(runs_dir, run.name)
  os.makedirs(run_dir)
  with open(os.path.join(run_dir, common.RECORD_FILE), 'w') as f:
    json.dump(dict(task=run.task, flags=list(run.flags), commit='x'), f)
  history = [dict(round=r, accuracy=a, minority_accuracy=a / 2)
             for r, a in accuracies_by_round.items()]
  with open(os.path.join(run_dir, 'summary.json'), 'w') as f:
    json.dump(dict(history=history), f)
  with open(os.path.join(run_dir, 'metrics.csv'), 'w') as f:
    f.write('round,round_seconds\n' + ''.join(
        f'{r},{s}\n' for r, s in enumerate(seconds, 1)))
