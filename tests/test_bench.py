"""The benchmark helpers: table formatting, round times, result files."""

import os

import pytest

from bench import common
from bench import quality


def test_mean_std_uses_the_population_std():
  assert common.mean_std([0.5, 0.7]) == '0.6000 ± 0.1000'
  assert common.mean_std([0.25]) == '0.2500 ± 0.0000'


def test_markdown_table_has_a_separator_and_one_line_per_row():
  table = common.markdown_table(['a', 'b'], [(1, 2), ('x', 'y')])
  assert table.splitlines() == ['| a | b |', '|---|---|', '| 1 | 2 |',
                                '| x | y |']


def test_round_seconds_reports_the_first_round_apart(tmp_path):
  (tmp_path / 'metrics.csv').write_text(
      'round,round_seconds,accuracy\n1,9.0,\n2,1.0,\n3,3.0,0.5\n4,2.0,\n')
  assert common.round_seconds(str(tmp_path)) == (9.0, 2.0)


def test_round_seconds_of_an_empty_run_says_so(tmp_path):
  (tmp_path / 'metrics.csv').write_text('round,round_seconds\n')
  with pytest.raises(ValueError, match='no round times'):
    common.round_seconds(str(tmp_path))


def test_write_result_names_the_command(tmp_path):
  path = os.path.join(tmp_path, 'sub', 'r.md')
  common.write_result(path, 'Title', 'python -m bench.x --y=1', 'Notes.',
                      '| a |\n|---|')
  text = open(path).read()
  assert text.startswith('# Title\n')
  assert 'Command: `python -m bench.x --y=1`' in text
  assert text.endswith('| a |\n|---|\n')


def test_a_failing_task_reports_its_stderr(tmp_path):
  with pytest.raises(common.TaskFailed, match='No module named'):
    common.run_task('tasks.no_such_task', [], str(tmp_path))


def test_every_quality_protocol_states_its_budget():
  for name, protocol in quality.PROTOCOLS.items():
    assert protocol.task in ('tasks.mnist_lt', 'tasks.femnist'), name
    assert 0 < protocol.quick_rounds < protocol.rounds, name
    assert not any(f.startswith(('--algo=', '--seed=', '--rounds='))
                   for f in protocol.flags), name
