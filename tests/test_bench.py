"""The benchmark helpers: the grid of runs (reuse by flags, retries,
parallel jobs, commits), table formatting, round times, result files."""

import json
import os
import subprocess
import sys

import pytest

import concurrent_runs
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


def test_a_rewrite_that_ran_nothing_gives_no_time(tmp_path):
  # A table rewritten from finished runs once said "run <date>, 0 s".
  path = os.path.join(tmp_path, 'r.md')
  common.write_result(path, 'T', 'cmd', 'Notes.', '| a |\n|---|',
                      elapsed_s=3.0, ran_nothing=True)
  text = open(path).read()
  assert 'rewritten 20' in text and 'none run now' in text
  assert ', 3 s' not in text and '(run ' not in text
  common.write_result(path, 'T', 'cmd', 'Notes.', '| a |\n|---|',
                      elapsed_s=3.0)
  assert '(run 20' in open(path).read() and ', 3 s on' in open(path).read()


def test_a_failing_task_reports_its_stderr(tmp_path):
  with pytest.raises(common.TaskFailed, match='No module named'):
    common.run_task('tasks.no_such_task', [], str(tmp_path))


def test_every_quality_protocol_states_its_budget():
  for name, protocol in quality.PROTOCOLS.items():
    assert protocol.task in ('tasks.mnist_lt', 'tasks.femnist'), name
    assert 0 < protocol.quick_rounds < protocol.rounds, name
    assert not any(f.startswith(('--algo=', '--seed=', '--rounds='))
                   for f in protocol.flags), name


# A stand-in task program for the grid: writes summary.json from its flags in
# milliseconds. `--fail_first=N` exits 1 on its first N starts and
# `--hang_first=N` sleeps on them (counted in <output_dir>/../starts_<name>),
# so that retries can be seen.
_FAKE_TASK = '''
import json, os, sys, time
args = dict(a[2:].split('=', 1) for a in sys.argv[1:] if '=' in a)
out = args['output_dir']
counter = os.path.join(os.path.dirname(out), 'starts_' + os.path.basename(out))
starts = int(open(counter).read()) + 1 if os.path.exists(counter) else 1
open(counter, 'w').write(str(starts))
if starts <= int(args.get('fail_first', 0)):
  sys.exit('fake task: failing on purpose')
if starts <= int(args.get('hang_first', 0)):
  time.sleep(30)
json.dump(dict(flags=sys.argv[1:], starts=starts,
               accuracy=float(args.get('acc', 0.5))),
          open(os.path.join(out, 'summary.json'), 'w'))
'''


@pytest.fixture
def fake_task(tmp_path, monkeypatch):
  """The module name of the fake task, importable by task subprocesses."""
  (tmp_path / 'fake_task.py').write_text(_FAKE_TASK)
  monkeypatch.setenv('PYTHONPATH', str(tmp_path))
  return 'fake_task'


def _options(tmp_path, **kwargs):
  return common.GridOptions(runs_dir=str(tmp_path / 'runs'), **kwargs)


def _starts(tmp_path, name):
  return int((tmp_path / 'runs' / f'starts_{name}').read_text())


def test_grid_runs_every_run_and_reuses_them_by_flags(tmp_path, fake_task):
  runs = [common.Run(f'r{i}', fake_task, (f'--acc=0.{i}', '--seed=0'))
          for i in range(3)]
  first = common.run_grid(runs, _options(tmp_path, parallel=2))
  assert [s['accuracy'] for s in first.summaries(['r0', 'r1', 'r2'])] == [
      0.0, 0.1, 0.2]
  assert not any(o.reused for o in first.outcomes.values())
  second = common.run_grid(runs, _options(tmp_path, parallel=2))
  assert all(o.reused for o in second.outcomes.values())
  assert [_starts(tmp_path, f'r{i}') for i in range(3)] == [1, 1, 1]
  assert '3 of 3 runs were reused' in second.footer()
  # Nothing ran now, so the header has no time for the footer to qualify.
  assert 'time above' not in second.footer()
  third = common.run_grid(
      runs + [common.Run('r3', fake_task, ('--acc=0.3', '--seed=0'))],
      _options(tmp_path, parallel=2))
  assert ('3 of 4 runs were reused from an earlier invocation with the same '
          'task and flags (the time above is this invocation\'s).'
          in third.footer())


def test_a_changed_flag_reruns_in_the_same_directory(tmp_path, fake_task):
  common.run_grid([common.Run('r', fake_task, ('--acc=0.25',))],
                  _options(tmp_path))
  grid = common.run_grid([common.Run('r', fake_task, ('--acc=0.75',))],
                         _options(tmp_path))
  assert not grid['r'].reused
  assert grid['r'].summary['accuracy'] == 0.75
  assert _starts(tmp_path, 'r') == 2
  # An added flag is another run too.
  grid = common.run_grid(
      [common.Run('r', fake_task, ('--acc=0.75', '--seed=1'))],
      _options(tmp_path))
  assert not grid['r'].reused


def test_a_directory_without_a_record_is_rerun(tmp_path, fake_task):
  run_dir = tmp_path / 'runs' / 'r'
  run_dir.mkdir(parents=True)
  (run_dir / 'summary.json').write_text('{"accuracy": 0.99}')
  grid = common.run_grid([common.Run('r', fake_task, ('--acc=0.5',))],
                         _options(tmp_path))
  assert not grid['r'].reused and grid['r'].summary['accuracy'] == 0.5


def test_a_crashed_run_is_retried_a_bounded_number_of_times(tmp_path,
                                                           fake_task):
  grid = common.run_grid([common.Run('r', fake_task, ('--fail_first=1',))],
                         _options(tmp_path, retries=1))
  assert grid['r'].summary['starts'] == 2 and grid['r'].attempts == 2
  grid = common.run_grid([common.Run('s', fake_task, ('--fail_first=5',))],
                         _options(tmp_path, retries=2))
  assert grid['s'].summary is None and _starts(tmp_path, 's') == 3
  assert 'failing on purpose' in grid['s'].error
  with pytest.raises(common.TaskFailed, match='s: .*failing on purpose'):
    grid.summaries(['s'])


def test_a_run_that_times_out_is_killed_and_retried(tmp_path, fake_task):
  grid = common.run_grid([common.Run('r', fake_task, ('--hang_first=1',))],
                         _options(tmp_path, timeout_s=2, retries=1))
  assert grid['r'].summary['starts'] == 2


def test_the_commit_is_recorded_and_mixed_commits_are_named(tmp_path,
                                                           fake_task):
  runs = [common.Run(f'r{i}', fake_task, ()) for i in range(2)]
  common.run_grid(runs, _options(tmp_path))
  record_path = tmp_path / 'runs' / 'r0' / common.RECORD_FILE
  record = json.loads(record_path.read_text())
  # The commit without '+dirty': other edits may land between the two calls.
  assert record['commit'].split('+')[0] == common.git_commit().split('+')[0]
  assert record['flags'] == [] and record['task'] == fake_task
  assert common.run_grid(runs, _options(tmp_path)).footer().count(
      'commits') == 0
  record['commit'] = 'abc123'
  record_path.write_text(json.dumps(record))
  footer = common.run_grid(runs, _options(tmp_path)).footer()
  assert 'several commits' in footer and 'abc123 (1 runs)' in footer


def test_a_dry_run_prints_commands_and_runs_nothing(tmp_path, fake_task,
                                                    capsys):
  grid = common.run_grid([common.Run('r', fake_task, ('--acc=0.5',))],
                         _options(tmp_path, dry_run=True))
  assert f'-m {fake_task} --acc=0.5 --output_dir=' in capsys.readouterr().out
  assert grid['r'].summary is None
  assert not (tmp_path / 'runs').exists()


def test_runs_sharing_a_directory_are_refused(tmp_path, fake_task):
  with pytest.raises(ValueError, match='share a directory: r'):
    common.run_grid([common.Run('r', fake_task, ('--a=1',)),
                     common.Run('r', fake_task, ('--a=2',))],
                    _options(tmp_path))


def test_write_result_puts_the_footer_after_the_table(tmp_path):
  path = os.path.join(tmp_path, 'r.md')
  common.write_result(path, 'T', 'cmd', 'Notes.', '| a |\n|---|',
                      footer='2 of 2 runs were reused.')
  assert open(path).read().endswith('|---|\n\n2 of 2 runs were reused.\n')


_BAD_FLAGS = [
    ('bench.speed', '--sections=nope',
     '--sections: nope not among methods, memory'),
    ('bench.speed', '--algos=fedavg,climb:climb_nope=1',
     "--algos=climb:climb_nope=1: 'climb_nope' is not an option flag of "
     '--algo=climb'),
    ('bench.speed', '--algos=climb:climb_epsilon=tiny',
     "--algos=climb:climb_epsilon=tiny: climb_epsilon='tiny' is not a "
     'float.'),
    ('bench.reproduce', '--table=redgrape_t1 --rows=Nope',
     'Nope: not a column or row of redgrape_t1'),
    ('bench.reproduce', '--table=fedavg_check --seeds=0',
     'fedavg_check: no finished run for --seeds=0'),
    ('bench.fedavg_paired', '--seeds=0', '--seeds must be >= 1 (got 0)'),
    ('bench.fedavg_paired', '--rounds=0', '--rounds must be >= 1 (got 0).'),
    ('bench.fedavg_paired', '--plain_client_momentum=1',
     '--plain_client_momentum must be in [0, 1) (got 1.0).'),
    ('bench.fedavg_paired', '--data_dir=/nonexistent',
     '--data_dir=/nonexistent is not a directory'),
]


@pytest.fixture(scope='module')
def bad_flag_results(tmp_path_factory):
  """Each case's process and --output path, all started together."""
  outputs = {(module, flag): tmp_path_factory.mktemp('bad_flag') / 'out.md'
             for module, flag, _ in _BAD_FLAGS}
  results = concurrent_runs.run_all(
      {key: [sys.executable, '-m', key[0], *key[1].split(),
             f'--output={output}'] for key, output in outputs.items()},
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
      timeout=300)
  return {key: (results[key], outputs[key]) for key in outputs}


@pytest.mark.parametrize('module, flag, message', _BAD_FLAGS)
def test_a_bad_benchmark_flag_stops_with_its_line(module, flag, message,
                                                  bad_flag_results):
  result, output = bad_flag_results[module, flag]
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith(message)
  assert not output.exists()


def test_git_commit_ignores_written_results_but_not_code(tmp_path):
  def git(*args):
    subprocess.run(['git', '-C', str(tmp_path), *args], check=True,
                   capture_output=True, stdin=subprocess.DEVNULL)
  git('init', '-q')
  (tmp_path / 'results').mkdir()
  (tmp_path / 'results' / 't.md').write_text('old\n')
  (tmp_path / 'code.py').write_text('x = 1\n')
  git('add', '.')
  git('-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'c')
  clean = common.git_commit(str(tmp_path))
  assert not clean.endswith('+dirty')
  (tmp_path / 'results' / 't.md').write_text('new\n')
  assert common.git_commit(str(tmp_path)) == clean
  (tmp_path / 'code.py').write_text('x = 2\n')
  assert common.git_commit(str(tmp_path)) == clean + '+dirty'
