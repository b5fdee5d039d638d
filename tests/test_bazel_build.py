"""The committed BUILD files are what `python -m bazel.generate_build` writes.

Needs no Bazel: the generator reads the source tree and its imports. Under
`bazel test` the file is a symlink into the runfiles tree, so the tree is
found through its real path.
"""

import os
import textwrap

import pytest

from bazel import generate_build

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))


def test_committed_build_files_match_the_generator():
  stale = generate_build.stale_build_files(ROOT)
  assert not stale, (f'BUILD files out of date: {", ".join(stale)}; run '
                     f'`{generate_build.COMMAND}`.')


def _write(root, path, text):
  full = root / path
  full.parent.mkdir(parents=True, exist_ok=True)
  full.write_text(textwrap.dedent(text))


@pytest.fixture
def tiny_tree(tmp_path):
  _write(tmp_path, 'pkg/__init__.py', '"""Package."""\n')
  _write(tmp_path, 'pkg/a.py', 'import numpy\n')
  _write(tmp_path, 'pkg/sub/__init__.py', '')
  _write(tmp_path, 'pkg/sub/b.py', 'from pkg import a\nfrom . import c\n')
  _write(tmp_path, 'pkg/sub/c.py', '')
  _write(tmp_path, 'pkg/prog.py', """\
      import importlib
      importlib.import_module('pkg.sub.c')
      if __name__ == '__main__':
        pass
      """)
  _write(tmp_path, 'tests/conftest.py', '')
  _write(tmp_path, 'tests/helper.py', '')
  _write(tmp_path, 'tests/test_x.py', """\
      import helper
      from pkg.sub import b
      NAME = 'prog'
      COMMAND = f'pkg.{NAME}'
      """)
  _write(tmp_path, 'venv_like/BUILD', 'not ours\n')
  _write(tmp_path, 'stub/WORKSPACE', '')
  _write(tmp_path, 'stub/d.py', 'import pkg.a\n')
  return tmp_path


def test_targets_follow_modules_imports_and_programs(tiny_tree):
  files = generate_build.expected_build_files(str(tiny_tree))
  assert sorted(files) == ['BUILD', 'pkg/BUILD', 'pkg/sub/BUILD',
                           'tests/BUILD']  # Not the other repository stub/.
  sub = files['pkg/sub/BUILD']
  # b imports a (another package) and c (relative); __init__s come with them.
  assert ('name = "b",\n    srcs = ["b.py"],\n    deps = [\n'
          '        ":c",\n        "//pkg:a",\n    ],') in sub
  pkg = files['pkg/BUILD']
  # A program: binary of its name over a library `<name>_lib`; a module
  # named in a string is a dependency.
  assert 'py_binary(\n    name = "prog",' in pkg
  assert ('name = "prog_lib",\n    srcs = ["prog.py"],\n    deps = ['
          '"//pkg/sub:c"],') in pkg
  # Third-party imports are the interpreter's, not targets.
  assert ('py_library(\n    name = "a",\n    srcs = ["a.py"],\n'
          '    deps = [":__init__"],\n)') in pkg
  tests = files['tests/BUILD']
  assert 'load("//bazel:defs.bzl", "pytest_test")' in tests
  # An f-string 'pkg.{...}' means every module of pkg; `import helper` is
  # tests/helper.py (pytest puts the test's folder on sys.path).
  assert ('pytest_test(\n    name = "test_x",\n    srcs = ["test_x.py"],\n'
          '    timeout = "long",\n    deps = [\n        ":conftest",\n'
          '        ":helper",\n        "//pkg/sub:b",\n        "//pkg:a",\n'
          '        "//pkg:prog_lib",\n'
          '    ],') in tests


def test_stale_files_are_named(tiny_tree):
  assert sorted(generate_build.stale_build_files(str(tiny_tree))) == [
      'BUILD', 'pkg/BUILD', 'pkg/sub/BUILD', 'tests/BUILD']
  for path, content in generate_build.expected_build_files(
      str(tiny_tree)).items():
    (tiny_tree / path).write_text(content)
  assert generate_build.stale_build_files(str(tiny_tree)) == []
  (tiny_tree / 'pkg/sub/c.py').unlink()  # prog named it: pkg/BUILD changes.
  assert generate_build.stale_build_files(str(tiny_tree)) == [
      'pkg/BUILD', 'pkg/sub/BUILD']
  (tiny_tree / 'gone').mkdir()
  (tiny_tree / 'gone/BUILD').write_text(generate_build.HEADER)
  assert 'gone/BUILD' in generate_build.stale_build_files(str(tiny_tree))
