"""Runs the pytest file given as argument; the `main` of every `pytest_test`.

`bazel/defs.bzl` passes the test file's path (relative to the runfiles tree,
Bazel's working directory for tests). Results go to Bazel's XML file, and
pytest's temporary directories under the test's own TEST_TMPDIR.
"""

import os
import sys

import pytest


def main() -> int:
  args = ['-q', *sys.argv[1:]]
  if 'XML_OUTPUT_FILE' in os.environ:
    args.append(f'--junitxml={os.environ["XML_OUTPUT_FILE"]}')
  if 'TEST_TMPDIR' in os.environ:
    args.append(f'--basetemp={os.path.join(os.environ["TEST_TMPDIR"], "pytest")}')
  return pytest.main(args)


if __name__ == '__main__':
  sys.exit(main())
