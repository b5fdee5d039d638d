"""Runs the README's marked Python examples, as a new user would paste them.

A block is marked by the line `<!-- test: NAME -->` right before its
```python fence; every marked block must run and print what it promises.
"""

import os
import re

import pytest

# Imported at collection so that conftest installs the managed worker for
# these examples even when this file runs alone: TFF's own default context
# hands its worker pytest's captured stdout, which has no file descriptor.
from tff_imbalance import runtime  # pylint: disable=unused-import

_README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), 'README.md')
_MARKED_BLOCK = re.compile(
    r'<!-- test: (?P<name>[\w-]+) -->\n```python\n(?P<code>.*?)\n```',
    re.DOTALL)


def _marked_blocks() -> dict[str, str]:
  with open(_README) as f:
    return {m['name']: m['code'] for m in _MARKED_BLOCK.finditer(f.read())}


def test_readme_marks_the_library_example():
  assert 'library-example' in _marked_blocks()


@pytest.mark.parametrize('name', sorted(_marked_blocks()))
def test_readme_example_runs(name, capsys):
  exec(compile(_marked_blocks()[name], f'README.md:{name}', 'exec'),  # pylint: disable=exec-used
       {'__name__': f'readme_{name}'})
  printed = capsys.readouterr().out
  if name == 'library-example':
    # Fed-Focal and RedGrape by name, then their builders next to TFF's.
    reported = re.findall(r'^(\w+) balanced accuracy (\S+)$', printed, re.M)
    assert [algo for algo, _ in reported] == [
        'fedfocal', 'redgrape', 'fedfocal', 'redgrape', 'tff_fedavg']
    assert all(0.0 <= float(value) <= 1.0 for _, value in reported)
