"""The project as a pip package: what the wheel holds, what it runs.

`pyproject.toml` ships `tff_imbalance` (with its data) and nothing generic
(`tasks`, `bench`, `tests` stay in the checkout); its console scripts are the
task modules' `run`; `make venv` installs the checkout editable, so that the
package imports from any directory; and a run's task line stays valid
whichever spelling of the task started it.
"""

import ast
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile

from bazel import generate_build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_COPIED = ('pyproject.toml', 'README.md', 'tff_imbalance', 'tasks', 'bench',
           'tests')


def _pyproject():
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    return tomllib.load(f)


def test_the_wheel_holds_the_package_and_its_data_only(tmp_path):
  # Built from a copy: setuptools writes build/ and *.egg-info beside the
  # sources, which must not appear in the checkout.
  source = tmp_path / 'src'
  source.mkdir()
  for name in _COPIED:
    path = os.path.join(ROOT, name)
    if os.path.isdir(path):
      shutil.copytree(path, source / name, ignore=shutil.ignore_patterns(
          '__pycache__', '*.pyc'))
    else:
      shutil.copy(path, source / name)
  result = subprocess.run(
      [sys.executable, '-m', 'pip', 'wheel', '--no-deps',
       '--no-build-isolation', '--no-index', '-w', str(tmp_path / 'out'),
       str(source)], capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stdout + result.stderr
  (wheel,) = (tmp_path / 'out').glob('tff_imbalance-*.whl')
  names = zipfile.ZipFile(wheel).namelist()
  assert {n.split('/')[0] for n in names} == {
      'tff_imbalance', wheel.name.split('-py3')[0] + '.dist-info'}
  assert 'tff_imbalance/data/sources/femnist_sample.npz' in names
  assert 'tff_imbalance/tasks/mnist_lt.py' in names


def test_console_scripts_run_the_task_modules():
  scripts = _pyproject()['project']['scripts']
  assert set(scripts) >= {'tff-imbalance-mnist-lt', 'tff-imbalance-femnist',
                          'tff-imbalance-demo', 'tff-imbalance-worker'}
  for script, target in scripts.items():
    module, function = target.split(':')
    path = os.path.join(ROOT, *module.split('.')) + '.py'
    with open(path) as f:
      defined = {node.name for node in ast.parse(f.read()).body
                 if isinstance(node, ast.FunctionDef)}
    assert function in defined, target
    if module.startswith('tff_imbalance.tasks.'):
      # tasks/common.py names a console script's task from its name.
      task = module.rpartition('.')[2]
      assert script == 'tff-imbalance-' + task.replace('_', '-')


def test_the_installed_package_imports_from_any_directory(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  result = subprocess.run(
      [sys.executable, '-c', 'import tff_imbalance; print(tff_imbalance.'
       '__file__)'], cwd=tmp_path, env=env, capture_output=True, text=True,
      timeout=60)
  assert result.returncode == 0, (
      f'{result.stderr}\nnot installed: run `make venv`, or `pip install '
      '--no-deps --no-build-isolation -e .` in this venv.')
  assert os.path.dirname(result.stdout.strip()) == os.path.join(
      ROOT, 'tff_imbalance')
  generic = subprocess.run([sys.executable, '-c', 'import tasks'],
                           cwd=tmp_path, env=env, capture_output=True,
                           timeout=60)
  assert generic.returncode != 0  # No top-level `tasks` in site-packages.


def test_bazel_ships_the_femnist_sample_with_its_module():
  build = generate_build.expected_build_files(ROOT)[
      'tff_imbalance/data/sources/BUILD']
  assert 'data = ["femnist_sample.npz"]' in build


def test_a_run_of_tasks_mnist_lt_continues_as_the_package_module(tmp_path):
  # A run recorded by `python -m tasks.mnist_lt` (the checkout's spelling)
  # is the same task for `python -m tff_imbalance.tasks.mnist_lt`: only the
  # changed flag is named. The check runs before any data loads.
  (tmp_path / 'flags.txt').write_text(
      f'# python -m tasks.mnist_lt --flagfile={tmp_path}/flags.txt\n'
      '--algo=fedavg\n')
  (tmp_path / 'metrics.csv').write_text('round\n1\n')
  result = subprocess.run(
      [sys.executable, '-m', 'tff_imbalance.tasks.mnist_lt', '--algo=fedprox',
       f'--output_dir={tmp_path}'], cwd=ROOT, capture_output=True, text=True,
      timeout=300, stdin=subprocess.DEVNULL)
  assert result.returncode == 2, result.stderr
  assert '(--algo=fedavg there, --algo=fedprox here)' in result.stderr
