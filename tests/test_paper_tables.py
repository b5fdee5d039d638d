"""bench.paper_tables: collecting finished runs into a published table's
rows, the differences to the baseline row, and the seed tables' shapes."""

import pytest

from bench import common
from bench import paper_tables
from bench import seed_tables
from tests import fake_runs
from tff_imbalance import errors


def test_ours_is_the_last_rounds_mean_and_differences_go_to_the_first_row(
    tmp_path):
  table = fake_runs.toy_table()
  runs_dir = str(tmp_path)
  cell = lambda row, seeds: paper_tables.cell_runs(table, 't', 'cpu', 'IR 10',
                                                   row, seeds)
  # FedAvg: seeds at (0.8+0.9)/2 = 0.85 and 0.75; round 2 is outside the
  # last 2 rounds and must not count.
  fake_runs.finish_run(runs_dir, cell('FedAvg', 2)[0], {2: 0.1, 3: 0.8, 4: 0.9})
  fake_runs.finish_run(runs_dir, cell('FedAvg', 2)[1], {2: 0.1, 3: 0.7, 4: 0.8})
  # A (seed 0 only) beats FedAvg's seed 0 by 2 points like the paper; B
  # (seed 1 only) loses 1 to FedAvg's seed 1 where the paper gains 1: the
  # differences are paired by seed, not taken to FedAvg's mean over both
  # seeds (0.80), which would give A -1 and B +4.
  fake_runs.finish_run(runs_dir, cell('A', 1)[0], {3: 0.87, 4: 0.87})
  fake_runs.finish_run(runs_dir, cell('B', 2)[1], {3: 0.74, 4: 0.74})
  cells = paper_tables.collect(table, 't', 'cpu', runs_dir)
  assert cells[('FedAvg', 'IR 10')].values[0] == pytest.approx((0.85, 0.75))
  assert cells[('FedAvg', 'IR 10')].seeds == 2
  assert cells[('B', 'IR 10')].seed_ids == (1,)
  assert paper_tables.our_difference(table, cells, 'A', 'IR 10') == (
      pytest.approx(2.0))
  assert paper_tables.our_difference(table, cells, 'B', 'IR 10') == (
      pytest.approx(-1.0))
  assert paper_tables.paper_difference(table, 'B', 'IR 10') == 1.0
  text = paper_tables.column_table(table, 'IR 10', cells)
  line = {l.split(' | ')[0].strip('| '): l for l in text.splitlines()}
  assert '80.00 ± 5.00' in line['FedAvg'] and '+2.00' in line['A']
  assert '87.00 ± 0.00' in line['A']
  assert line['A'].count('yes') == 1 and '**no**' in line['B']


def test_a_cell_without_finished_runs_says_not_run_yet(tmp_path):
  table = fake_runs.toy_table()
  cells = paper_tables.collect(table, 't', 'cpu', str(tmp_path))
  assert cells == {}
  assert paper_tables.column_table(table, 'IR 10', cells).count(
      'not run yet') == 3


def test_make_table_refuses_an_unknown_row(tmp_path):
  with pytest.raises(errors.UserInputError, match='Nope: not a column or row'):
    paper_tables.make_table(
        (fake_runs.toy_table(),), 't', 'cpu', 1,
        common.GridOptions(runs_dir=str(tmp_path), dry_run=True),
        str(tmp_path / 'out.md'), rows=['Nope'])


def _run_names(name, seeds=1):
  return [run.name for part in seed_tables.TABLES[name]
          for column in part.columns for row in part.rows
          for run in paper_tables.cell_runs(part, name, 'cpu', column, row,
                                            seeds)]


def test_rows_shared_by_parts_of_a_table_are_one_run():
  names = _run_names('fedfocal_t3')
  # 000 table 5's gamma 2.0 (psi 0) is table 6's psi 0.0 and table 4's CE and
  # Fed-Focal at ratio 0.10 are table 5's CE and table 6's psi 0.8.
  assert len(names) == 17 and len(set(names)) == 14


@pytest.mark.parametrize('name', sorted(seed_tables.TABLES))
def test_every_seed_table_names_real_rows_columns_and_budgets(name):
  for part in seed_tables.TABLES[name]:
    assert set(part.budgets) == {'cpu', 'paper'}, part.name
    for measure in part.measures:
      assert measure.paper, part.name
      assert set(measure.paper) <= {(r, c) for r in part.rows
                                    for c in part.columns}, part.name
    for column in part.columns:
      for row in part.rows:
        flags = paper_tables.cell_runs(part, name, 'cpu', column, row,
                                       1)[0].flags
        algos = [f for f in flags if f.startswith('--algo=')]
        assert len(algos) == 1, (part.name, row)
  assert len(set(_run_names(name))) == len(
      {tuple(f) for f in [run_flags for run_flags in _flag_sets(name)]})


def _flag_sets(name):
  return [paper_tables.cell_runs(part, name, 'cpu', column, row, 1)[0].flags
          for part in seed_tables.TABLES[name] for column in part.columns
          for row in part.rows]


def test_a_metric_without_classes_to_average_reads_n_a(tmp_path):
  # Few-shot accuracy is None where no class has under 20 examples (full
  # MNIST-LT): the table says n/a instead of failing.
  table = fake_runs.toy_table(ours_only=(paper_tables.Measure(
      'few-shot', paper_tables.last_rounds_mean('few_shot_accuracy')),))
  run = paper_tables.cell_runs(table, 't', 'cpu', 'IR 10', 'FedAvg', 1)[0]
  fake_runs.finish_run(str(tmp_path), run, {3: 0.8, 4: 0.9})
  cells = paper_tables.collect(table, 't', 'cpu', str(tmp_path))
  line = paper_tables.column_table(table, 'IR 10', cells).splitlines()[2]
  assert 'n/a' in line and '85.00 ± 0.00' in line


@pytest.mark.parametrize('paper,ours,expected', [
    (0.26, -0.63, '**no**'), (3.02, 1.99, 'yes'), (-0.28, -0.03, 'yes'),
    # A difference that prints as 0.00 has no sign: 002's +98.29 against a
    # measured 0.00 is not an agreement, nor is 0.00 against 0.00 a
    # disagreement.
    (98.29, 0.001, '**no** (0)'), (0.0, -0.004, 'yes'), (0.0, 0.5,
                                                        '**no** (0)'),
])
def test_same_sign_reads_the_printed_precision(paper, ours, expected):
  assert paper_tables.same_sign(paper, ours, 2) == expected
