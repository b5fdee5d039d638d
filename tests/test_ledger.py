"""bench.ledger and its use by bench.paper_tables: a table's numbers survive
the loss of runs/, a run the ledger holds is not run again, stale entries
are not read, and carried means compare with other rows honestly."""

import json
import math
import shutil

import pytest

from bench import common
from bench import ledger as ledger_lib
from bench import paper_tables
from tests import fake_runs
from tff_imbalance import errors

_LABELS = ('accuracy',)


def _cell_runs(table, row, seeds):
  return paper_tables.cell_runs(table, 't', 'cpu', 'IR 10', row, seeds)


def _carried(table, row, seed_ids, mean, std, source='old.md'):
  first = _cell_runs(table, row, 1)[0]
  name = first.name.rsplit('/', 1)[0]
  return name, ledger_lib.CarriedCell(
      first.task, ledger_lib.unseeded(first.flags), _LABELS, seed_ids,
      (mean,), (std,), 2.0, source)


def test_the_ledger_keeps_what_the_table_read_from_runs(tmp_path):
  table = fake_runs.toy_table()
  runs_dir = tmp_path / 'runs'
  for seed, accuracy in enumerate((0.8, 0.7)):
    fake_runs.finish_run(str(runs_dir), _cell_runs(table, 'FedAvg', 2)[seed],
                        {3: accuracy, 4: accuracy})
  fake_runs.finish_run(str(runs_dir), _cell_runs(table, 'A', 1)[0],
                      {3: 0.9, 4: 0.9})
  ledger = ledger_lib.Ledger()
  from_runs = paper_tables.collect(table, 't', 'cpu', str(runs_dir), ledger)
  path = str(tmp_path / 'table.runs.json')
  ledger_lib.write(path, ledger)
  assert sorted(ledger.runs) == sorted(
      [r.name for r in _cell_runs(table, 'FedAvg', 2)] +
      [_cell_runs(table, 'A', 1)[0].name])

  # runs/ is gone (a fresh checkout): the ledger alone gives the same table.
  shutil.rmtree(runs_dir)
  from_ledger = paper_tables.collect(table, 't', 'cpu', str(runs_dir),
                                     ledger_lib.read(path))
  assert from_ledger == from_runs
  assert from_ledger[('FedAvg', 'IR 10')].values[0] == pytest.approx(
      (0.8, 0.7))
  assert from_ledger[('A', 'IR 10')].commits == ('x',)
  assert paper_tables.our_difference(table, from_ledger, 'A', 'IR 10') == (
      pytest.approx(10.0))


def test_an_entry_of_other_flags_or_measures_is_not_read(tmp_path):
  table = fake_runs.toy_table()
  run = _cell_runs(table, 'FedAvg', 1)[0]
  ledger = ledger_lib.Ledger(runs={run.name: ledger_lib.RunEntry(
      run.task, (*run.flags[:-1], '--rounds=99'), _LABELS, (0.5,), 1.0, 'c',
      '2026-12-01')})
  assert paper_tables.collect(table, 't', 'cpu', str(tmp_path), ledger) == {}
  ledger.runs[run.name] = ledger_lib.RunEntry(
      run.task, run.flags, ('balanced accuracy',), (0.5,), 1.0, 'c',
      '2026-12-01')
  assert paper_tables.collect(table, 't', 'cpu', str(tmp_path), ledger) == {}
  ledger.runs[run.name] = ledger_lib.RunEntry(
      run.task, run.flags, _LABELS, (0.5,), 1.0, 'c', '2026-12-01')
  cells = paper_tables.collect(table, 't', 'cpu', str(tmp_path), ledger)
  assert cells[('FedAvg', 'IR 10')].values == ((0.5,),)


def test_make_table_does_not_run_what_the_ledger_holds(tmp_path, capsys):
  table = fake_runs.toy_table()
  output = str(tmp_path / 'out.md')
  held = _cell_runs(table, 'A', 2)[0]
  ledger_lib.write(ledger_lib.path_for(output), ledger_lib.Ledger(runs={
      held.name: ledger_lib.RunEntry(held.task, held.flags, _LABELS, (0.9,),
                                     1.0, 'c', '2026-12-01')}))
  paper_tables.make_table(
      (table,), 't', 'cpu', 2,
      common.GridOptions(runs_dir=str(tmp_path / 'runs'), dry_run=True),
      output, rows=['A'])
  printed = capsys.readouterr().out
  assert '1 chosen runs are held by' in printed
  assert '--algo=a' in printed and '--seed=1' in printed
  assert '--seed=0' not in printed


def test_make_table_does_not_run_a_cell_a_carried_cell_holds(tmp_path,
                                                            capsys):
  table = fake_runs.toy_table()
  output = str(tmp_path / 'out.md')
  name, carried = _carried(table, 'A', (0, 1, 2), 0.8, 0.01)
  ledger_lib.write(ledger_lib.path_for(output),
                   ledger_lib.Ledger(carried={name: carried}))
  options = common.GridOptions(runs_dir=str(tmp_path / 'runs'), dry_run=True)
  paper_tables.make_table((table,), 't', 'cpu', 3, options, output,
                          rows=['A'])
  printed = capsys.readouterr().out
  assert '3 chosen runs are held by' in printed
  assert '--algo=a' not in printed
  # Seed 3 is not among the carried seeds: the whole cell runs, and its own
  # four seeds replace the carried mean once finished.
  paper_tables.make_table((table,), 't', 'cpu', 4, options, output,
                          rows=['A'])
  printed = capsys.readouterr().out
  assert 'held by' not in printed
  assert all(f'--seed={k}' in printed for k in range(4))


def test_carries_needs_the_cells_exact_flags_and_measures():
  table = fake_runs.toy_table()
  name, carried = _carried(table, 'A', (0, 1, 2), 0.8, 0.01)
  ledger = ledger_lib.Ledger(carried={name: carried})
  runs = _cell_runs(table, 'A', 2)
  assert ledger.carries(runs, _LABELS)
  assert not ledger.carries(runs, ('balanced accuracy',))
  assert not ledger.carries(_cell_runs(table, 'FedAvg', 2), _LABELS)
  other_flags = [common.Run(r.name, r.task, (*r.flags, '--rounds=99'))
                 for r in runs]
  assert not ledger.carries(other_flags, _LABELS)


def test_a_carried_cell_shows_until_own_runs_have_as_many_seeds(tmp_path):
  table = fake_runs.toy_table()
  name, carried = _carried(table, 'FedAvg', (0, 1, 2), 0.8, 0.01)
  ledger = ledger_lib.Ledger(carried={name: carried})
  runs_dir = str(tmp_path)
  runs = _cell_runs(table, 'FedAvg', 3)
  fake_runs.finish_run(runs_dir, runs[0], {3: 0.5, 4: 0.5})
  cell = paper_tables.collect(table, 't', 'cpu', runs_dir, ledger)[
      ('FedAvg', 'IR 10')]
  assert cell.carried == carried and cell.seed_ids == (0, 1, 2)
  line = paper_tables.column_table(table, 'IR 10', {('FedAvg', 'IR 10'): cell}
                                   ).splitlines()[2]
  assert '80.00 ± 1.00' in line
  for run in runs[1:]:
    fake_runs.finish_run(runs_dir, run, {3: 0.6, 4: 0.6})
  cell = paper_tables.collect(table, 't', 'cpu', runs_dir, ledger)[
      ('FedAvg', 'IR 10')]
  assert cell.carried is None
  assert cell.values[0] == pytest.approx((0.5, 0.6, 0.6))


def test_differences_to_a_carried_baseline_are_paired_only_over_its_seeds(
    tmp_path):
  table = fake_runs.toy_table()
  name, carried = _carried(table, 'FedAvg', (0, 1, 2), 0.8, 0.01)
  ledger = ledger_lib.Ledger(carried={name: carried})
  runs_dir = str(tmp_path)
  # A has seeds 0-2 (mean 0.85): the paired difference is of the means.
  for seed, accuracy in enumerate((0.84, 0.85, 0.86)):
    fake_runs.finish_run(runs_dir, _cell_runs(table, 'A', 3)[seed],
                        {3: accuracy, 4: accuracy})
  # B has seed 0 only (0.9): the carried mean is over seeds 0-2, so B's
  # difference is unpaired (+10, marked), not a made-up seed-0 pairing.
  fake_runs.finish_run(runs_dir, _cell_runs(table, 'B', 1)[0],
                      {3: 0.9, 4: 0.9})
  cells = paper_tables.collect(table, 't', 'cpu', runs_dir, ledger)
  assert paper_tables.difference_and_pairing(table, cells, 'A', 'IR 10') == (
      pytest.approx(5.0), True)
  assert paper_tables.difference_and_pairing(table, cells, 'B', 'IR 10') == (
      pytest.approx(10.0), False)
  lines = {l.split(' | ')[0].strip('| '): l for l in
           paper_tables.column_table(table, 'IR 10', cells).splitlines()}
  assert '+5.00 |' in lines['A'] and '+10.00 † |' in lines['B']


def test_n_a_is_written_as_null_and_read_back_as_nan(tmp_path):
  path = str(tmp_path / 'x.runs.json')
  ledger_lib.write(path, ledger_lib.Ledger(runs={'r/seed0': (
      ledger_lib.RunEntry('tasks.mnist_lt', ('--seed=0',), ('a', 'b'),
                          (0.5, float('nan')), 1.0, 'c', '2026-12-01'))}))
  assert json.load(open(path))['runs']['r/seed0']['values'] == [0.5, None]
  values = ledger_lib.read(path).runs['r/seed0'].values
  assert values[0] == 0.5 and math.isnan(values[1])


def test_a_broken_ledger_stops_with_one_line(tmp_path):
  path = tmp_path / 'x.runs.json'
  path.write_text('{"runs": {"r": {"task": "t"}}}')
  with pytest.raises(errors.UserInputError, match=r'x.runs.json: not a run '
                     r'ledger \(KeyError.*restore it with git checkout'):
    ledger_lib.read(str(path))
  assert ledger_lib.read(str(tmp_path / 'missing.json')) == ledger_lib.Ledger()


def test_the_committed_ledgers_are_readable():
  # Every results/reproduce_*.runs.json parses, and its entries' measures
  # are those of the table it sits beside.
  from bench import seed_tables
  for name, parts in seed_tables.TABLES.items():
    ledger = ledger_lib.read(f'results/reproduce_{name}.runs.json')
    labels = {tuple(m.label for m in (*p.measures, *p.ours_only))
              for p in parts}
    for entry in (*ledger.runs.values(), *ledger.carried.values()):
      assert entry.measures in labels, name


def test_entries_come_from_run_directories_else_from_the_ledger(tmp_path):
  # What bench.reproduce's fedavg_check reads: numbers by label from each
  # run's summary, kept in the ledger for when the directories are gone.
  runs = common.seeded_runs('fedavg_check', 'tasks.mnist_lt',
                            ('--algo=fedavg',), 3)
  for seed, run in enumerate(runs[:2]):
    run_dir = tmp_path / run.name
    run_dir.mkdir(parents=True)
    (run_dir / common.RECORD_FILE).write_text(json.dumps(
        dict(task=run.task, flags=list(run.flags), commit='abc')))
    (run_dir / 'summary.json').write_text(json.dumps(
        dict(accuracy=0.5 + seed / 10, minority_accuracy=0.7)))
    (run_dir / 'metrics.csv').write_text('round,round_seconds\n1,9\n2,3\n')
  measures = {'accuracy': lambda s: s['accuracy'],
              'tail': lambda s: s['minority_accuracy']}
  ledger = ledger_lib.Ledger()
  found = ledger_lib.entries(runs, str(tmp_path), ledger, measures)
  assert [e.values for e in found[:2]] == [pytest.approx((0.5, 0.7)),
                                          pytest.approx((0.6, 0.7))]
  assert found[2] is None
  assert found[0].commit == 'abc' and found[0].seconds_per_round == 3
  shutil.rmtree(tmp_path / 'fedavg_check')
  assert ledger_lib.entries(runs, str(tmp_path), ledger, measures) == found
  assert ledger_lib.entries(runs, str(tmp_path), ledger_lib.Ledger(),
                            measures) == [None] * 3
