"""Client selection between rounds: uniform and Fed-Focal's psi selection.

A selector picks the fixed number K of client indices for round t from the
previous round's measurements, and carries whatever state it needs in
`get_state()`/`set_state()` (plain numpy values) so that the runner can save
it with the process state and a resumed run selects the same clients.
"""

from typing import Any, Optional

import numpy as np

from tff_imbalance import errors


def _check_cohort(num_clients: int, clients_per_round: int) -> None:
  if not 1 <= clients_per_round <= num_clients:
    raise errors.UserInputError(
        f'--clients_per_round must be in [1, {num_clients}] (the number of '
        f'clients); got {clients_per_round}.')


class UniformSelector:
  """K distinct clients uniformly at random; round t's draw depends on (seed, t)."""

  needs_validation = False

  def __init__(self, num_clients: int, clients_per_round: int, seed: int):
    _check_cohort(num_clients, clients_per_round)
    self.num_clients = num_clients
    self.clients_per_round = clients_per_round
    self.seed = seed

  def select(self, round_num: int, measurements: Any = None) -> np.ndarray:
    del measurements  # Uniform selection ignores what the last round showed.
    rng = np.random.default_rng([self.seed, round_num])
    return np.sort(
        rng.choice(self.num_clients, self.clients_per_round, replace=False))

  def get_state(self) -> dict[str, np.ndarray]:
    return {}

  def set_state(self, state: dict[str, np.ndarray]) -> None:
    del state


def improved_slots(measurements: Any) -> np.ndarray:
  """Per-slot booleans: validation loss after local training < before.

  Reads the per-slot vectors that the shared client work reports with
  `validation_slots` (`round_report/validation_loss_{before,after}`).
  """
  report = measurements['client_work']['round_report']
  before = np.asarray(report['validation_loss_before'])
  after = np.asarray(report['validation_loss_after'])
  return after < before


class PsiSelector:
  """Fed-Focal's psi client selection (000 sec 3.2, eqs. 7-13).

  Round 1 (the paper's i = 0) draws K clients uniformly. Afterwards, let C_i
  be last round's cohort and V_i the clients of C_i whose validation loss went
  down during their local training (eq. 9). Keep a uniformly random subset
  V^c_i of V_i of size k = min(|V_i|, floor(psi K)) (eqs. 8, 10, 11) and fill
  the other K - k places uniformly from the clients not in V^c_i (eq. 12:
  "any" clients; we exclude the kept ones so no client is picked twice).
  psi = 0 is uniform sampling; psi = 1 keeps every improved client.

  The selection is deterministic given (seed, round, last cohort, improved
  flags), and the last cohort and its flags are the selector's state.
  """

  needs_validation = True

  def __init__(self, num_clients: int, clients_per_round: int, psi: float,
               seed: int):
    _check_cohort(num_clients, clients_per_round)
    if not 0.0 <= psi <= 1.0:
      raise errors.UserInputError(
          f'--psi must be in [0, 1] (got {psi}); 0 is uniform sampling, 0.8 '
          'the paper\'s default.')
    self.num_clients = num_clients
    self.clients_per_round = clients_per_round
    self.psi = psi
    self.seed = seed
    self.max_kept = int(np.floor(psi * clients_per_round + 1e-9))
    self._last_cohort: Optional[np.ndarray] = None

  def select(self, round_num: int, measurements: Any = None) -> np.ndarray:
    """Round `round_num`'s cohort, given the previous round's measurements."""
    rng = np.random.default_rng([self.seed, round_num])
    kept = np.zeros([0], np.int64)
    if self._last_cohort is not None and measurements is not None:
      improved = self._last_cohort[improved_slots(measurements)]
      k = min(len(improved), self.max_kept)
      kept = rng.choice(improved, k, replace=False) if k else kept
    return self._fill(kept, rng)

  def select_from_improved(self, round_num: int, last_cohort: np.ndarray,
                           improved: np.ndarray) -> np.ndarray:
    """The same rule with the history given directly (for tests and tools)."""
    self._last_cohort = np.asarray(last_cohort, np.int64)
    report = dict(validation_loss_before=np.where(improved, 1.0, 0.0),
                  validation_loss_after=np.zeros(len(improved)))
    return self.select(round_num,
                       dict(client_work=dict(round_report=report)))

  def _fill(self, kept: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    others = np.setdiff1d(np.arange(self.num_clients), kept)
    fill = rng.choice(others, self.clients_per_round - len(kept),
                      replace=False)
    cohort = np.concatenate([np.sort(kept), np.sort(fill)]).astype(np.int64)
    self._last_cohort = cohort
    return cohort

  def get_state(self) -> dict[str, np.ndarray]:
    cohort = (np.zeros([0], np.int64) if self._last_cohort is None else
              self._last_cohort)
    return {'last_cohort': cohort}

  def set_state(self, state: dict[str, np.ndarray]) -> None:
    cohort = np.asarray(state['last_cohort'], np.int64)
    self._last_cohort = cohort if cohort.size else None
