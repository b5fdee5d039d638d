"""Client selection between rounds: uniform and Fed-Focal's psi selection.

A selector picks the fixed number K of client indices for round t, and carries
whatever state it needs in `get_state()`/`set_state()` (plain numpy values) so
that the runner can save it with the process state and a resumed run selects
the same clients. A selector that learns from a round has `observe_round`,
which the runner calls after each round with its cohort, measurements and the
new global weights, and may report on itself with `summary()`.
"""

from typing import Any, Callable, Optional

import numpy as np

from tff_imbalance import errors

# psi selection's readings of "validation loss went down the last round"
# (000 eq. 9), the values of --psi_improvement; see docs/fedfocal.md.
GLOBAL = 'global'  # L_k(w^{t+1}) < L_k(w^t): the new global model vs received.
LOCAL = 'local'  # L_k(w_k^{t+1}) < L_k(w^t): own trained model vs received.
IMPROVEMENTS = (GLOBAL, LOCAL)

# `evaluate_cohort(model_weights, cohort) -> [K]` validation losses of the
# cohort's clients (in cohort order) under `model_weights`.
CohortEvaluator = Callable[[Any, np.ndarray], np.ndarray]


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


def _round_report(measurements: Any) -> Any:
  return measurements['client_work']['round_report']


def improved_slots(measurements: Any) -> np.ndarray:
  """Per-slot booleans of the local reading: loss after own training < before.

  Reads the per-slot vectors that the shared client work reports with
  `validation_slots` (`round_report/validation_loss_{before,after}`).
  """
  report = _round_report(measurements)
  before = np.asarray(report['validation_loss_before'])
  after = np.asarray(report['validation_loss_after'])
  return after < before


def cohort_evaluator(computation: Callable[[Any, list], Any], data: Any,
                     batch_size: int) -> CohortEvaluator:
  """The global reading's `evaluate_cohort` over a population's validation
  splits.

  Args:
    computation: `local_training.build_cohort_validation_loss(...)`.
    data: the `FederatedData` whose clients the runner trains.
    batch_size: the validation batch size of `round_inputs` (the same
      batching as the client work's `validation_loss_before`).

  Returns:
    `evaluate(model_weights, cohort) -> float [K]`.
  """

  def evaluate(model_weights, cohort):
    return np.asarray(computation(
        model_weights, data.validation_inputs(cohort, batch_size)))

  return evaluate


class PsiSelector:
  """Fed-Focal's psi client selection (000 sec 3.2, eqs. 7-13).

  Round 1 (the paper's i = 0) draws K clients uniformly. Afterwards, let C_i
  be last round's cohort and V_i its clients whose validation loss went down
  last round (eq. 9). Keep a uniformly random subset V^c_i of V_i of size
  k = min(|V_i|, floor(psi K)) (eqs. 8, 10, 11) and fill the other K - k
  places uniformly from the clients not in V^c_i (eq. 12: "any" clients; we
  exclude the kept ones so no client is picked twice). psi = 0 is uniform
  sampling; psi = 1 keeps every improved client.

  "Went down" has two readings (docs/fedfocal.md). `GLOBAL` (the default of
  `--psi_improvement`): client k of round t improved when its validation
  loss under the new global model w^{t+1} is below its loss under w^t, the
  model it received; L_k(w^{t+1}) comes from `evaluate_cohort`, called in
  `observe_round`. `LOCAL`: its loss after its own local training is below
  the loss under w^t (both reported by the client work); local training
  nearly always lowers it, so V_i is nearly all of C_i.

  The selection is deterministic given (seed, round, last cohort, improved
  flags), and the last cohort and its flags are the selector's state.
  """

  needs_validation = True

  def __init__(self, num_clients: int, clients_per_round: int, psi: float,
               seed: int, *, improvement: str = LOCAL,
               evaluate_cohort: Optional[CohortEvaluator] = None):
    """Builds the selector.

    Args:
      num_clients: the population size N.
      clients_per_round: the fixed cohort size K.
      psi: the share of K kept from last round's improved clients, in [0, 1].
      seed: seeds every draw (with the round number).
      improvement: `GLOBAL` or `LOCAL` (see the class docstring).
      evaluate_cohort: `GLOBAL` only: the cohort's validation losses under
        given weights (`cohort_evaluator`).

    Raises:
      errors.UserInputError: for psi outside [0, 1], K outside [1, N] or an
        unknown `improvement`.
      ValueError: if `evaluate_cohort` is missing for `GLOBAL`.
    """
    _check_cohort(num_clients, clients_per_round)
    check_psi(psi)
    check_improvement(improvement)
    if (improvement == GLOBAL) != (evaluate_cohort is not None):
      raise ValueError('evaluate_cohort is needed by, and only by, the global '
                       f'reading (improvement={improvement!r}).')
    self.num_clients = num_clients
    self.clients_per_round = clients_per_round
    self.psi = psi
    self.seed = seed
    self.improvement = improvement
    self._evaluate_cohort = evaluate_cohort
    self.max_kept = int(np.floor(psi * clients_per_round + 1e-9))
    self._last_cohort: Optional[np.ndarray] = None
    self._improved: Optional[np.ndarray] = None
    # Slots observed, improved under this reading, improved locally.
    self._slot_counts = np.zeros([3], np.int64)

  def observe_round(self, round_num: int, cohort: np.ndarray,
                    measurements: Any, model_weights: Any) -> None:
    """Records which clients of round `round_num` improved (eq. 9).

    Args:
      round_num: the round just run.
      cohort: its client indices, in slot order.
      measurements: its process measurements (per-slot validation losses).
      model_weights: the global model after it, w^{t+1}.
    """
    del round_num  # The flags depend only on the round's losses.
    cohort = np.asarray(cohort, np.int64)
    before = np.asarray(
        _round_report(measurements)['validation_loss_before'])[:len(cohort)]
    locally = improved_slots(measurements)[:len(cohort)]
    improved = locally
    if self.improvement == GLOBAL:
      after = self._evaluate_cohort(model_weights, cohort)[:len(cohort)]
      improved = after < before
    self._set_history(cohort, improved)
    self._slot_counts += [len(cohort), improved.sum(), locally.sum()]

  def _set_history(self, cohort: np.ndarray, improved: np.ndarray) -> None:
    self._last_cohort = np.asarray(cohort, np.int64)
    self._improved = np.asarray(improved, bool)

  def kept_clients(self, rng: np.random.Generator) -> np.ndarray:
    """V^c_i: at most floor(psi K) of last round's improved clients, at random
    (eqs. 10-11)."""
    if self._last_cohort is None:
      return np.zeros([0], np.int64)
    improved = self._last_cohort[self._improved]
    k = min(len(improved), self.max_kept)
    if not k:
      return np.zeros([0], np.int64)
    return rng.choice(improved, k, replace=False)

  def select(self, round_num: int, measurements: Any = None) -> np.ndarray:
    """Round `round_num`'s cohort C_{i+1} = V^c_i + R_{i+1} (eqs. 12-13)."""
    del measurements  # Read by `observe_round`, kept in the state.
    rng = np.random.default_rng([self.seed, round_num])
    kept = self.kept_clients(rng)
    others = np.setdiff1d(np.arange(self.num_clients), kept)
    fill = rng.choice(others, self.clients_per_round - len(kept),
                      replace=False)
    return np.concatenate([np.sort(kept), np.sort(fill)]).astype(np.int64)

  def select_from_improved(self, round_num: int, last_cohort: np.ndarray,
                           improved: np.ndarray) -> np.ndarray:
    """The same rule with the history given directly (for tests and tools)."""
    self._set_history(last_cohort, improved)
    return self.select(round_num)

  def summary(self) -> dict[str, Any]:
    """The reading and the mean share of a cohort counted improved (both
    readings where measured: the local one always is)."""
    observed, improved, locally = (int(c) for c in self._slot_counts)
    share = lambda n: n / observed if observed else None
    return dict(psi=self.psi, improvement=self.improvement,
                improved_fraction=share(improved),
                local_improved_fraction=share(locally))

  def get_state(self) -> dict[str, np.ndarray]:
    if self._last_cohort is None:
      cohort, improved = np.zeros([0], np.int64), np.zeros([0], np.int32)
    else:
      cohort, improved = self._last_cohort, self._improved.astype(np.int32)
    return {'last_cohort': cohort, 'improved': improved,
            'slot_counts': self._slot_counts.copy()}

  def set_state(self, state: dict[str, np.ndarray]) -> None:
    cohort = np.asarray(state['last_cohort'], np.int64)
    if cohort.size:
      self._set_history(cohort, np.asarray(state['improved']) != 0)
    else:
      self._last_cohort = self._improved = None
    self._slot_counts = np.asarray(state['slot_counts'], np.int64).copy()


def check_psi(psi: float) -> None:
  """Raises `errors.UserInputError` unless psi is in [0, 1] (eq. 7)."""
  if not 0.0 <= psi <= 1.0:
    raise errors.UserInputError(
        f'--psi must be in [0, 1] (got {psi}); 0 is uniform sampling, 0.8 '
        'the paper\'s default.')


def check_improvement(improvement: str) -> None:
  """Raises `errors.UserInputError` for an unknown psi improvement reading."""
  if improvement not in IMPROVEMENTS:
    raise errors.UserInputError(
        f'--psi_improvement must be one of {", ".join(IMPROVEMENTS)} (got '
        f'{improvement!r}).')
