"""A run's resumable state, saved with TFF's `FileProgramStateManager`.

One checkpoint is one TFF program state holding everything a resumed run needs
to continue exactly where the uninterrupted run would be:

  round_num       the last finished round K;
  process_state   the learning process's state after round K;
  selector_state  the client selector's `get_state()` after choosing round K;
  measurements    round K's metrics (psi selection reads them to pick round
                  K + 1's cohort);
  history         every evaluation up to round K, as JSON text.

Atomicity. `FileProgramStateManager.save` (TFF 0.87,
`program/file_utils.write_saved_model`) writes the SavedModel into
`<root>/program_state_<K>_temp<NNNN>` and then renames that directory to
`<root>/program_state_<K>`: a POSIX rename within one directory is atomic, so a
process killed mid-save leaves only a `_temp` directory, whose name does not
parse as a version and is never loaded (we delete such leftovers on open). A
version that exists but cannot be read (a disk that lost unsynced data, a
deletion of old versions cut short) is skipped with a warning in favour of the
previous one, and moved aside before its round is saved again.
"""

import asyncio
import collections
from concurrent import futures
import dataclasses
import json
import os
import re
import shutil
from typing import Any, Awaitable, Optional, TypeVar

from absl import logging
import numpy as np

from tff_imbalance import compat
from tff_imbalance import errors

tff = compat.tff

PREFIX = 'program_state_'
# TFF's temporary name for a save in progress (file_utils.write_saved_model).
_PARTIAL_WRITE = re.compile(re.escape(PREFIX) + r'\d+_temp\d+$')
_UNREADABLE_PREFIX = 'unreadable_'

T = TypeVar('T')


def run_sync(awaitable: Awaitable[T]) -> T:
  """Runs one of TFF's async program calls to completion.

  `asyncio.run` refuses to start inside a running event loop (a notebook), so
  there the call runs on a helper thread with its own loop.
  """
  try:
    asyncio.get_running_loop()
  except RuntimeError:
    return asyncio.run(awaitable)
  with futures.ThreadPoolExecutor(max_workers=1) as pool:
    return pool.submit(asyncio.run, awaitable).result()


@dataclasses.dataclass
class RunState:
  """Everything a run needs to continue after round `round_num`.

  Attributes:
    round_num: the last finished round (0 before the first).
    process_state: the learning process's state.
    selector_state: the client selector's `get_state()`.
    measurements: the last round's metrics (None before the first round).
    history: every evaluation so far, JSON-able dicts with a 'round' key.
  """
  round_num: int
  process_state: Any
  selector_state: dict[str, Any]
  measurements: Any
  history: list[dict[str, Any]]


def measurements_template(process: tff.templates.IterativeProcess) -> Any:
  """Zeros shaped like the metrics `process.next` returns.

  `FileProgramStateManager.load` needs the saved structure; the metrics of a
  round do not exist before the first round runs, so build them from the
  type signature instead.

  Args:
    process: a process whose `next` returns `(state, metrics)`.

  Returns:
    The metrics' Python containers with numpy zeros as leaves (unknown
    dimensions as 0: `load` matches nesting, not shapes).
  """
  metrics_type = process.next.type_signature.result.metrics
  if isinstance(metrics_type, tff.FederatedType):
    metrics_type = metrics_type.member
  return _zeros_of_type(metrics_type)


def _zeros_of_type(type_spec) -> Any:
  if isinstance(type_spec, tff.TensorType):
    return np.zeros([d or 0 for d in type_spec.shape], type_spec.dtype)
  elements = [(name, _zeros_of_type(member))
              for name, member in tff.structure.iter_elements(type_spec)]
  return tff.types.type_to_py_container(tff.structure.Struct(elements),
                                        type_spec)


def _to_program_state(run_state: RunState) -> collections.OrderedDict:
  return collections.OrderedDict(
      round_num=np.int64(run_state.round_num),
      process_state=run_state.process_state,
      selector_state=run_state.selector_state,
      measurements=run_state.measurements,
      # The history grows every evaluation and the loaded structure must
      # match the saved one, so it travels as one string.
      history=json.dumps(run_state.history))


def _from_program_state(program_state) -> RunState:
  history = program_state['history']
  if isinstance(history, bytes):
    history = history.decode('utf-8')
  return RunState(round_num=int(program_state['round_num']),
                  process_state=program_state['process_state'],
                  selector_state=dict(program_state['selector_state']),
                  measurements=program_state['measurements'],
                  history=json.loads(history))


def saved_rounds(root_dir: str) -> list[int]:
  """The rounds with a checkpoint in `root_dir` (none if it does not exist).

  Unlike `CheckpointManager`, creates nothing: for checks before a run.
  """
  if not os.path.isdir(root_dir):
    return []
  return sorted(int(name[len(PREFIX):]) for name in os.listdir(root_dir)
                if name.startswith(PREFIX) and name[len(PREFIX):].isdigit())


class CheckpointManager:
  """Saves and restores `RunState`s under one directory, one per round."""

  def __init__(self, root_dir: str, keep: int = 3):
    """Opens (creating if needed) a checkpoint directory.

    Args:
      root_dir: the directory holding `program_state_<round>` directories.
      keep: how many of the latest checkpoints to keep (more than one, so an
        unreadable latest one can fall back to its predecessor).

    Raises:
      errors.UserInputError: if the directory cannot be created.
    """
    try:
      os.makedirs(root_dir, exist_ok=True)
    except OSError as e:
      raise errors.UserInputError(
          f'cannot create the checkpoint directory {root_dir}: {e.strerror}; '
          'choose a writable --output_dir.') from None
    self.root_dir = root_dir
    self._manager = tff.program.FileProgramStateManager(
        root_dir, prefix=PREFIX, keep_total=keep, keep_first=False)
    self._remove_partial_writes()

  def _remove_partial_writes(self) -> None:
    for name in os.listdir(self.root_dir):
      if _PARTIAL_WRITE.match(name):
        logging.warning('Removing an interrupted checkpoint write: %s', name)
        shutil.rmtree(os.path.join(self.root_dir, name), ignore_errors=True)

  def rounds(self) -> list[int]:
    """The rounds with a saved checkpoint, ascending."""
    return run_sync(self._manager.get_versions()) or []

  def save(self, run_state: RunState) -> None:
    """Saves `run_state` as the checkpoint of round `run_state.round_num`."""
    path = os.path.join(self.root_dir, f'{PREFIX}{run_state.round_num}')
    if os.path.exists(path):
      # Only a checkpoint `load_latest` could not read can be in the way: a
      # readable one would have been resumed from, not redone.
      self._move_aside(path)
    run_sync(self._manager.save(_to_program_state(run_state),
                                run_state.round_num))

  def _move_aside(self, path: str) -> None:
    aside = os.path.join(os.path.dirname(path),
                         _UNREADABLE_PREFIX + os.path.basename(path))
    shutil.rmtree(aside, ignore_errors=True)
    os.rename(path, aside)
    logging.warning('Moved the unreadable checkpoint %s to %s.', path, aside)

  def load_latest(self, template: RunState) -> Optional[RunState]:
    """The latest readable checkpoint, or None when there is none at all.

    Args:
      template: a `RunState` with the structure of the saved ones (the initial
        process state, the selector's state, `measurements_template(...)`).

    Returns:
      The restored state, or None if the directory holds no checkpoint.

    Raises:
      errors.UserInputError: if checkpoints exist but none can be read.
    """
    structure = _to_program_state(template)
    last_error = None
    for round_num in reversed(self.rounds()):
      try:
        program_state = run_sync(self._manager.load(round_num, structure))
      except Exception as e:  # pylint: disable=broad-except
        # Whatever went wrong (a truncated file, a structure from another
        # version of the code), an older checkpoint may still serve.
        logging.warning('Cannot read the checkpoint of round %d in %s: %s',
                        round_num, self.root_dir, e)
        last_error = e
        continue
      return _from_program_state(program_state)
    if last_error is not None:
      raise errors.UserInputError(
          f'no readable checkpoint in {self.root_dir} (latest error: '
          f'{str(last_error).splitlines()[0]}); start without --resume in '
          'another --output_dir.')
    return None
