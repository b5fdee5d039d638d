"""Runs a module's subprocess cases together, so that their start-ups overlap.

A `python -m tasks...` or `bench...` case spends about 8 s of one core
importing TensorFlow and TFF before it checks a flag, and the suite has dozens
such cases. Started together (`MAX_CONCURRENT` at a time), CI's two cores run
a module's cases in about half the sequential time, each still its own process
exactly as a user starts it: its own stderr, exit status and worker.
"""

import concurrent.futures
import subprocess
from typing import Hashable, Mapping, Sequence

# Two cases per core: one imports while the other computes.
MAX_CONCURRENT = 4


def run_all(commands: Mapping[Hashable, Sequence[str]], cwd: str,
            timeout: float) -> dict[Hashable, subprocess.CompletedProcess]:
  """Each command's `CompletedProcess` (text output), under its own key."""
  with concurrent.futures.ThreadPoolExecutor(MAX_CONCURRENT) as pool:
    futures = {
        key: pool.submit(subprocess.run, list(command), cwd=cwd,
                         capture_output=True, text=True, timeout=timeout,
                         stdin=subprocess.DEVNULL)
        for key, command in commands.items()
    }
    return {key: future.result() for key, future in futures.items()}
