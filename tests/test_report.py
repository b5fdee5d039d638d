"""Reading a run directory back (`report.read_run`), on hand-written files."""

import json

import pytest

from tff_imbalance import errors
from tff_imbalance import report


def _write_metrics(run_dir, text):
  run_dir.mkdir(exist_ok=True)
  (run_dir / report.METRICS_FILE).write_text(text)


def test_rows_come_back_typed_with_empty_cells_as_none(tmp_path):
  _write_metrics(tmp_path, 'round,round_seconds,train_examples,'
                 'balanced_accuracy,clients,monitor_cosine\n'
                 '1,0.5,40,,3 0,0.9\n'
                 '2,0.25,38,0.0,1 2,\n')
  results = report.read_run(str(tmp_path))
  assert results.rows == (
      dict(round=1, round_seconds=0.5, train_examples=40,
           balanced_accuracy=None, clients='3 0', monitor_cosine=0.9),
      dict(round=2, round_seconds=0.25, train_examples=38,
           balanced_accuracy=0.0, clients='1 2', monitor_cosine=None))
  assert results.summary is None
  # An evaluation of 0.0 is an evaluation: only empty cells are left out.
  assert results.curve('balanced_accuracy') == ((2,), (0.0,))


def test_a_line_cut_short_by_a_kill_loses_only_its_missing_cells(tmp_path):
  _write_metrics(tmp_path, 'round,round_seconds,accuracy\n1,0.5,0.7\n2,0.')
  results = report.read_run(str(tmp_path))
  assert results.rows[1] == dict(round=2, round_seconds=0.0, accuracy=None)
  assert results.curve('accuracy') == ((1,), (0.7,))


def test_summary_comes_back_when_the_run_finished(tmp_path):
  _write_metrics(tmp_path, 'round\n1\n')
  (tmp_path / report.SUMMARY_FILE).write_text(json.dumps({'accuracy': 0.5}))
  assert report.read_run(str(tmp_path)).summary == {'accuracy': 0.5}
  assert report.read_summary(str(tmp_path)) == {'accuracy': 0.5}


def test_a_directory_without_metrics_is_one_clear_error(tmp_path):
  with pytest.raises(errors.UserInputError, match='pass the --output_dir'):
    report.read_run(str(tmp_path / 'missing'))


def test_statistics_over_clients_skip_missing_values():
  summary = report.summarize_clients([
      dict(accuracy=0.5, auc=None, per_class_accuracy=[1.0, None]),
      dict(accuracy=0.7, auc=0.8, per_class_accuracy=[0.0, 0.5])])
  assert summary['accuracy'] == pytest.approx(0.6)
  assert summary['accuracy_std'] == pytest.approx(0.1)
  assert (summary['auc'], summary['auc_min']) == (0.8, 0.8)
  assert summary['macro_f1'] is None
  assert summary['per_class_accuracy'] == [0.5, 0.5]
