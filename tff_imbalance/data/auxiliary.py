"""Server-side auxiliary data, held out of every client before anything else.

Ratio Loss's monitor (002 sec 4.1) assumes the server holds a few examples
of every class (32 in the paper), from public data or volunteers, that no
client trains on. The tasks take them from the training pool before the
imbalance profile and the partition, for every algorithm, so that all
methods of a comparison see the same client splits; `--aux_per_class=0`
takes none.
"""

import dataclasses
from typing import Any, Optional

import numpy as np

from tff_imbalance import errors
from tff_imbalance.data import arrays

# Mixed into the seed so that the hold-out draw differs from other seeded
# draws of the same run (profile, partition).
_SEED_TAG = 2021


@dataclasses.dataclass(frozen=True)
class AuxiliarySplit:
  """The held-out auxiliary examples and what remains for the clients.

  Attributes:
    aux_indices: indices into the pool of the server's examples, sorted.
    remaining: indices into the pool left for profile and partition, sorted.
    class_counts: [C] auxiliary examples per class.
    per_class: the requested examples per class.
  """
  aux_indices: np.ndarray
  remaining: np.ndarray
  class_counts: np.ndarray
  per_class: int

  def server_data(self,
                  pool: arrays.LabeledArrays) -> Optional[arrays.LabeledArrays]:
    """The auxiliary examples, or None when none were held out."""
    if not len(self.aux_indices):
      return None
    return pool.take(self.aux_indices)

  def summary(self) -> dict[str, Any]:
    """JSON-able facts for summary.json: how many, and that clients lack them."""
    return dict(
        aux_per_class=self.per_class,
        aux_class_counts=self.class_counts.tolist(),
        aux_held_out_of_clients=True,
        aux_note=('server auxiliary data taken from the training pool before '
                  'the imbalance profile and held out of every client (002 '
                  'sec 4.1 assumption), for every algorithm'))


def hold_out(labels: np.ndarray, num_classes: int, per_class: int,
             seed: int) -> AuxiliarySplit:
  """Draws up to `per_class` examples of each class for the server.

  A class never gives more than half of its examples, so that clients keep
  some of every class (FEMNIST's rarest letters have few examples).

  Args:
    labels: [N] int labels of the training pool.
    num_classes: number of classes C.
    per_class: examples per class to hold out (>= 0; 0 holds none).
    seed: seeds the draw.

  Returns:
    An `AuxiliarySplit`.

  Raises:
    errors.UserInputError: if `per_class` < 0.
  """
  if per_class < 0:
    raise errors.UserInputError(
        f'--aux_per_class must be >= 0 (got {per_class}); 0 holds out none.')
  labels = np.asarray(labels)
  rng = np.random.default_rng(np.random.SeedSequence([seed, _SEED_TAG]))
  chosen = []
  counts = np.zeros(num_classes, np.int64)
  for c in range(num_classes):
    members = np.flatnonzero(labels == c)
    take = min(per_class, len(members) // 2)
    chosen.append(rng.choice(members, size=take, replace=False))
    counts[c] = take
  aux_indices = np.sort(np.concatenate(chosen)).astype(np.int64)
  remaining = np.setdiff1d(np.arange(len(labels)), aux_indices).astype(
      np.int64)
  return AuxiliarySplit(aux_indices=aux_indices, remaining=remaining,
                        class_counts=counts, per_class=per_class)
