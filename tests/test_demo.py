"""The demo's report: per-class table side by side and its PNG (no training)."""

import json

import pytest

from tff_imbalance.tasks import demo


def _fake_run(directory, per_class, counts, balanced):
  """A finished run directory: metrics.csv with 2 evaluations, summary."""
  directory.mkdir()
  (directory / 'metrics.csv').write_text(
      'round,round_seconds,balanced_accuracy\n'
      f'1,1.0,{balanced / 2}\n2,1.0,{balanced}\n')
  (directory / 'summary.json').write_text(json.dumps(dict(
      per_class_accuracy=per_class, train_class_counts=counts,
      balanced_accuracy=balanced, accuracy=balanced, few_shot_accuracy=None,
      minority_accuracy=per_class[0], macro_f1=0.5)))
  return str(directory)


@pytest.fixture
def two_runs(tmp_path):
  counts = [3, 90, 20]
  return [_fake_run(tmp_path / 'fedavg', [0.0, 1.0, 0.5], counts, 0.5),
          _fake_run(tmp_path / 'fix', [0.25, 0.75, 0.5], counts, 0.5 + 0.125)]


def test_the_table_puts_the_runs_side_by_side_head_first(two_runs, tmp_path):
  table = demo.write_report(['FedAvg', 'fix'], two_runs,
                            str(tmp_path / 'demo.png')).splitlines()
  assert table[0].split() == ['class', 'train', 'count', 'FedAvg', 'fix',
                              'gain']
  # Head (90) to tail (3), each run's accuracy, then fix minus FedAvg.
  assert [line.split() for line in table[2:5]] == [
      ['1', '90', '1.000', '0.750', '-0.250'],
      ['2', '20', '0.500', '0.500', '+0.000'],
      ['0', '3', '0.000', '0.250', '+0.250']]
  assert table[6].split()[-3:] == ['0.500', '0.625', '+0.125']
  assert table[8].split()[-3:] == ['-', '-', '-']  # few-shot absent


def test_the_png_is_written(two_runs, tmp_path):
  demo.write_report(['FedAvg', 'fix'], two_runs, str(tmp_path / 'demo.png'))
  assert (tmp_path / 'demo.png').read_bytes().startswith(b'\x89PNG')


def test_runs_of_different_class_counts_are_refused():
  with pytest.raises(ValueError, match='different numbers of classes'):
    demo.comparison_table(['a', 'b'], [
        dict(per_class_accuracy=[1.0], train_class_counts=[1]),
        dict(per_class_accuracy=[1.0, 0.0], train_class_counts=[1, 1])])


def test_both_runs_share_the_split_and_differ_only_by_method():
  commands = [demo.task_command(method_flags, 3, 'd')
              for _, _, method_flags in demo.METHODS]
  assert commands[0][:3 + len(demo.SPLIT_FLAGS)] == (
      commands[1][:3 + len(demo.SPLIT_FLAGS)])
  assert '--algo=fedavg' in commands[0]
  assert '--balanced_softmax_prior=global' in commands[1]
