"""The shared runner in process: release, checkpoints, resume, plots.

A tiny synthetic task (4 classes of 6x6 images, 6 clients) keeps every run
under a second per round; the processes are built once per module.
"""

import ast
import asyncio
import csv
import glob
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tff_imbalance import checkpointing
from tff_imbalance import errors
from tff_imbalance import plot
from tff_imbalance import report
from tff_imbalance import runner
from tff_imbalance.data import arrays
from tff_imbalance.data import federated
from tff_imbalance.learning import registry
from tff_imbalance.learning import selection
from tff_imbalance.models import spec as spec_lib

NUM_CLIENTS, COHORT, NUM_CLASSES = 6, 3, 4
SPEC = spec_lib.ModelSpec('mlp', (6, 6, 1), NUM_CLASSES, seed=0)


def _examples(n, seed):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, NUM_CLASSES, n).astype(np.int64)
  x = (rng.random((n, 6, 6, 1)) * 0.3 + y[:, None, None, None] / 4).astype(
      np.float32)
  return arrays.LabeledArrays(x=x, y=y)


@pytest.fixture(scope='module')
def task():
  pool = _examples(240, 0)
  data = federated.build_federated_data(
      pool, np.array_split(np.arange(240), NUM_CLIENTS), NUM_CLASSES,
      validation_fraction=0.25, seed=0)
  counts = np.bincount(data.train_labels(), minlength=NUM_CLASSES)
  config = registry.AlgorithmConfig(client_lr=0.1, clients_per_round=COHORT)
  context = registry.TaskContext(num_classes=NUM_CLASSES,
                                 num_clients=NUM_CLIENTS,
                                 train_class_counts=counts)
  options = {'fedavg': None,
             'fedfocal': registry.make_options('fedfocal', psi=0.6)}
  processes = {algo: registry.build_process(algo, SPEC, config, context,
                                            options[algo])
               for algo in ('fedavg', 'fedfocal')}
  # After the processes, as in tasks.common: building a process traces Keras
  # models in graphs, which invalidates an eager model made before it.
  evaluator = runner.Evaluator(SPEC, _examples(40, 1), counts)
  return dict(data=data, evaluator=evaluator, processes=processes,
              counts=counts.tolist())


def _selector(algo):
  if algo == 'fedfocal':
    return selection.PsiSelector(NUM_CLIENTS, COHORT, 0.6, seed=0)
  return selection.UniformSelector(NUM_CLIENTS, COHORT, seed=0)


def _run(task, output_dir, rounds, algo='fedavg', **config):
  config = dict(dict(local_epochs=1, batch_size=8, eval_every=2, seed=0,
                     quiet=True), **config)
  return runner.run(
      task['processes'][algo], task['data'], _selector(algo),
      task['evaluator'],
      runner.RunConfig(rounds=rounds,
                       output_dir=None if output_dir is None else
                       str(output_dir), **config),
      extra_summary=dict(train_class_counts=task['counts']))


def _rows(run_dir):
  with open(os.path.join(run_dir, report.METRICS_FILE), newline='') as f:
    rows = list(csv.DictReader(f))
  for row in rows:
    del row['round_seconds']  # Wall time is the one thing allowed to differ.
  return rows


def _weights(run_dir):
  with np.load(os.path.join(run_dir, report.WEIGHTS_FILE)) as f:
    return {name: f[name] for name in f.files}


def _assert_same_run(a, b):
  assert _rows(a) == _rows(b)
  wa, wb = _weights(a), _weights(b)
  assert wa.keys() == wb.keys()
  for name in wa:
    np.testing.assert_array_equal(wa[name], wb[name])


def _tensorboard_steps(run_dir, tag):
  steps = []
  for path in glob.glob(os.path.join(run_dir, report.TENSORBOARD_DIR, '*')):
    for record in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(record.numpy())
      steps += [event.step for v in event.summary.value if v.tag == tag]
  return sorted(steps)


def test_run_releases_csv_tensorboard_summary_weights_and_plots(task,
                                                                 tmp_path):
  summary = _run(task, tmp_path, rounds=3)
  rows = _rows(tmp_path)
  assert [r['round'] for r in rows] == ['1', '2', '3']
  assert all(len(set(r['clients'].split())) == COHORT for r in rows)
  assert rows[0]['balanced_accuracy'] == ''  # Evaluated at rounds 2 and 3.
  assert float(rows[1]['balanced_accuracy']) >= 0
  assert [h['round'] for h in summary['history']] == [2, 3]
  on_disk = json.loads((tmp_path / report.SUMMARY_FILE).read_text())
  assert on_disk['balanced_accuracy'] == summary['balanced_accuracy']
  assert len(on_disk['per_class_accuracy']) == NUM_CLASSES
  assert _tensorboard_steps(tmp_path, 'train/loss') == [1, 2, 3]
  assert _tensorboard_steps(tmp_path, 'eval/balanced_accuracy') == [2, 3]
  assert _tensorboard_steps(tmp_path, 'eval/per_class_accuracy/0') == [2, 3]
  weights = _weights(tmp_path)
  assert [w.shape for w in weights.values()] == [
      w.shape for w in SPEC.build_keras().get_weights()]
  for name in (plot.CURVES_FILE, plot.PER_CLASS_FILE):
    assert (tmp_path / name).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert not (tmp_path / report.CHECKPOINT_DIR).exists()


def test_without_output_dir_nothing_is_written(task, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  summary = _run(task, None, rounds=1)
  assert 'balanced_accuracy' in summary and not os.listdir(tmp_path)


def test_eval_last_evaluates_each_of_the_last_rounds(task):
  # rounds 1..7, every 3rd, the last 3: 3, 5, 6, 7 (a paper's last-rounds mean).
  summary = _run(task, None, rounds=7, eval_every=3, eval_last=3)
  assert [e['round'] for e in summary['history']] == [3, 5, 6, 7]
  summary = _run(task, None, rounds=4, eval_every=3)
  assert [e['round'] for e in summary['history']] == [3, 4]


@pytest.mark.parametrize('algo', ['fedavg', 'fedfocal'])
def test_resume_extends_a_run_exactly(task, tmp_path, algo):
  # fedfocal's psi selection reads the previous round's measurements, which
  # the checkpoint must carry along with the selector's last cohort.
  _run(task, tmp_path / 'whole', rounds=5, algo=algo, checkpoint_every=1)
  _run(task, tmp_path / 'parts', rounds=2, algo=algo, checkpoint_every=1)
  summary = _run(task, tmp_path / 'parts', rounds=5, algo=algo,
                 checkpoint_every=1, resume=True)
  _assert_same_run(tmp_path / 'whole', tmp_path / 'parts')
  whole = json.loads((tmp_path / 'whole' / report.SUMMARY_FILE).read_text())
  assert summary == whole
  assert _tensorboard_steps(tmp_path / 'parts', 'train/loss') == [1, 2, 3, 4,
                                                                  5]


def test_resume_drops_and_redoes_rounds_after_the_checkpoint(task, tmp_path):
  _run(task, tmp_path / 'whole', rounds=4, checkpoint_every=2)
  shutil.copytree(tmp_path / 'whole', tmp_path / 'crashed')
  # As if killed after releasing round 4 but before its checkpoint.
  shutil.rmtree(tmp_path / 'crashed' / report.CHECKPOINT_DIR /
                f'{checkpointing.PREFIX}4')
  _run(task, tmp_path / 'crashed', rounds=4, checkpoint_every=2,
       resume=True)
  _assert_same_run(tmp_path / 'whole', tmp_path / 'crashed')
  assert _tensorboard_steps(tmp_path / 'crashed', 'train/loss') == [1, 2, 3, 4]


def test_resume_of_a_finished_run_rewrites_its_results(task, tmp_path):
  first = _run(task, tmp_path, rounds=2, checkpoint_every=2)
  (tmp_path / report.SUMMARY_FILE).unlink()
  assert _run(task, tmp_path, rounds=2, checkpoint_every=2,
              resume=True) == first
  assert (tmp_path / report.SUMMARY_FILE).exists()


def _template(task):
  process = task['processes']['fedfocal']
  return checkpointing.RunState(
      round_num=0, process_state=process.initialize(),
      selector_state=_selector('fedfocal').get_state(),
      measurements=checkpointing.measurements_template(process), history=[])


def test_checkpoint_round_trip_is_exact(task, tmp_path):
  template = _template(task)
  saved = checkpointing.RunState(
      round_num=7, process_state=template.process_state,
      selector_state=dict(template.selector_state,
                          last_cohort=np.array([4, 0, 2])),
      measurements=template.measurements,
      history=[{'round': 5, 'balanced_accuracy': 0.1 + 0.2,
                'per_class_accuracy': [None, 0.5]}])
  manager = checkpointing.CheckpointManager(str(tmp_path))
  manager.save(saved)
  loaded = checkpointing.CheckpointManager(str(tmp_path)).load_latest(
      template)
  assert loaded.round_num == 7 and loaded.history == saved.history
  np.testing.assert_array_equal(loaded.selector_state['last_cohort'],
                                [4, 0, 2])
  tf.nest.map_structure(np.testing.assert_array_equal,
                        saved.process_state, loaded.process_state)
  tf.nest.map_structure(np.testing.assert_array_equal, saved.measurements,
                        loaded.measurements)


def test_half_written_or_unreadable_checkpoints_are_never_loaded(task,
                                                                 tmp_path):
  template = _template(task)
  manager = checkpointing.CheckpointManager(str(tmp_path))
  for round_num in (1, 2):
    manager.save(checkpointing.RunState(
        round_num, template.process_state, template.selector_state,
        template.measurements, [{'round': round_num}]))
  # A save killed before TFF's rename leaves its temporary directory ...
  partial = tmp_path / f'{checkpointing.PREFIX}3_temp1234'
  partial.mkdir()
  (partial / 'saved_model.pb').write_bytes(b'\x00' * 10)
  # ... and a version that lost its contents cannot be read.
  broken = tmp_path / f'{checkpointing.PREFIX}4'
  broken.mkdir()
  (broken / 'saved_model.pb').write_bytes(b'garbage')
  manager = checkpointing.CheckpointManager(str(tmp_path))
  assert not partial.exists()
  assert manager.load_latest(template).round_num == 2
  # Redoing round 4 moves the unreadable one aside instead of failing.
  manager.save(checkpointing.RunState(
      4, template.process_state, template.selector_state,
      template.measurements, [{'round': 4}]))
  assert manager.load_latest(template).history == [{'round': 4}]


def test_no_readable_checkpoint_is_one_clear_error(task, tmp_path):
  broken = tmp_path / f'{checkpointing.PREFIX}1'
  broken.mkdir()
  with pytest.raises(errors.UserInputError, match='no readable checkpoint'):
    checkpointing.CheckpointManager(str(tmp_path)).load_latest(
        _template(task))


@pytest.mark.parametrize('config, expected', [
    (dict(checkpoint_every=-1), '--checkpoint_every'),
    (dict(checkpoint_every=2), '--checkpoint_every needs --output_dir'),
    (dict(resume=True), '--resume needs --output_dir'),
    (dict(eval_last=-1), '--eval_last must be >= 0'),
])
def test_bad_config_is_one_clear_error(config, expected):
  with pytest.raises(errors.UserInputError, match=expected):
    runner.RunConfig(rounds=2, local_epochs=1, batch_size=8, eval_every=1,
                     seed=0, **config)


def test_bad_output_dirs_are_refused_before_any_work(task, tmp_path):
  with pytest.raises(errors.UserInputError, match='--resume: no checkpoint'):
    _run(task, tmp_path / 'empty', rounds=2, resume=True)
  _run(task, tmp_path / 'done', rounds=2, checkpoint_every=1)
  with pytest.raises(errors.UserInputError, match='pass --resume'):
    _run(task, tmp_path / 'done', rounds=2)
  with pytest.raises(errors.UserInputError, match='--rounds=1 is before'):
    _run(task, tmp_path / 'done', rounds=1, resume=True)
  (tmp_path / 'file').write_text('')
  with pytest.raises(errors.UserInputError,
                     match='cannot write to --output_dir'):
    _run(task, tmp_path / 'file' / 'run', rounds=2)


def _fake_run(run_dir, balanced, per_class, counts):
  os.makedirs(run_dir)
  with open(os.path.join(run_dir, report.METRICS_FILE), 'w') as f:
    f.write('round,balanced_accuracy\n')
    for round_num, value in enumerate(balanced, start=1):
      f.write(f'{round_num},{value}\n')
  with open(os.path.join(run_dir, report.SUMMARY_FILE), 'w') as f:
    json.dump(dict(per_class_accuracy=per_class, train_class_counts=counts), f)


def test_plot_cli_draws_several_runs_on_one_figure(tmp_path, capsys):
  _fake_run(tmp_path / 'a', [0.2, '', 0.5], [0.9, 0.1, None], [50, 5, 20])
  _fake_run(tmp_path / 'b', [0.3, 0.4, 0.6], [0.8, 0.3, 0.4], [50, 5, 20])
  runs = [plot.load_run(str(tmp_path / d)) for d in 'ab']
  assert runs[0].eval_rounds == (1, 3)
  output = tmp_path / 'both.png'
  assert plot.main([str(tmp_path / 'a'), str(tmp_path / 'b'),
                    f'--output={output}']) == 0
  assert output.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert plot.main([str(tmp_path / 'missing'), f'--output={output}']) == 2
  assert 'missing' in capsys.readouterr().err


def test_tff_program_calls_also_run_inside_a_running_event_loop():
  async def notebook_cell():
    return checkpointing.run_sync(asyncio.sleep(0, result=3))

  assert asyncio.run(notebook_cell()) == 3


def _imported_modules(path):
  """Dotted names a file imports (`from a import b` counts as `a.b`)."""
  with open(path) as f:
    tree = ast.parse(f.read())
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      yield from (f'{node.module}.{alias.name}' for alias in node.names)


def test_nothing_in_learning_imports_the_runner_or_its_outputs():
  # The runner runs processes; a process never reaches back up to it.
  learning_dir = os.path.join(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))), 'tff_imbalance', 'learning')
  upward = tuple(f'tff_imbalance.{name}'
                 for name in ('runner', 'report', 'plot', 'checkpointing'))
  offenders = [
      (os.path.relpath(path, learning_dir), module)
      for path in glob.glob(os.path.join(learning_dir, '**', '*.py'),
                            recursive=True)
      for module in _imported_modules(path)
      if module.startswith(upward)]
  assert not offenders
