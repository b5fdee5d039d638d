"""A user's TFF `ClientData` as a client population for the runner.

`ClientDataPopulation` adapts a `tff.simulation.datasets.ClientData` whose
examples are `(x, y)` pairs or `{'x': ..., 'y': ...}` dicts with integer
labels (int32 or int64) to `federated.ClientPopulation`, so that
`runner.run` trains on it with our rounds, checkpoints and outputs. Each
round reads the cohort's clients from the `ClientData` (nothing is kept in
memory between rounds), and a client's examples are visited in the same
seeded per-round, per-epoch order as `FederatedData`'s
(`federated.epoch_order`): the same seed gives the same run.

Other example structures (TFF's EMNIST has `pixels` and `label`) map to
`(x, y)` first with `client_data.preprocess(fn)`.

  population = client_data.ClientDataPopulation(my_client_data, seed=0)
  selector = selection.UniformSelector(population.num_clients, 10, seed=0)
  summary = runner.run(process, population, selector, evaluate,
                       runner.RunConfig(rounds=50, local_epochs=1,
                                        batch_size=20, eval_every=5, seed=0,
                                        output_dir='runs/mine',
                                        checkpoint_every=5))
"""

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from tff_imbalance import compat
from tff_imbalance import errors
from tff_imbalance.data import arrays
from tff_imbalance.data import federated
from tff_imbalance.data import partition as partition_lib

tff = compat.tff

# Examples read from a client's dataset at a time.
_READ_BATCH = 4096


def _feature_and_label(element: Any) -> tuple[Any, Any]:
  """(x, y) of an example (or of its type spec), either structure."""
  if isinstance(element, Mapping):
    return element['x'], element['y']
  return tuple(element)


def _check_element_type(element_type: Any) -> None:
  """Refuses examples that are not (x, y) or {'x', 'y'} with integer y."""
  if isinstance(element_type, Mapping):
    usable = set(element_type) == {'x', 'y'}
  else:
    usable = isinstance(element_type, Sequence) and len(element_type) == 2
  if usable:
    label_type = _feature_and_label(element_type)[1]
    usable = label_type.dtype.is_integer and label_type.shape.rank == 0
  if not usable:
    raise errors.UserInputError(
        f'client_data: examples must be (x, y) pairs or {{"x", "y"}} dicts '
        f'with a scalar integer label y (got {element_type}); map them with '
        'client_data.preprocess(fn) first.')


class ClientDataPopulation(federated.ClientPopulation):
  """A `ClientData`'s clients, in `client_ids` order, as round inputs.

  Attributes:
    client_ids: one id per client; client k of a round is `client_ids[k]`.
  """

  def __init__(self, client_data: tff.simulation.datasets.ClientData, *,
               validation_fraction: float = 0.0, seed: int = 0,
               client_ids: Optional[Sequence[str]] = None):
    """Adapts `client_data`.

    Args:
      client_data: clients' unbatched examples, `(x, y)` or `{'x', 'y'}`.
      validation_fraction: the share of each client's examples (per class)
        held out for local validation, in [0, 1), as
        `federated.build_federated_data` does.
      seed: seeds the validation splits.
      client_ids: the clients to use, in this order (default: all of
        `client_data.client_ids`). A client's split depends on its position
        in `client_data.client_ids`, not in this list, so a subset sees the
        same examples.

    Raises:
      errors.UserInputError: for examples of another structure, or client
        ids that `client_data` lacks.
    """
    _check_element_type(client_data.element_type_structure)
    all_ids = list(client_data.client_ids)
    self.client_ids = tuple(all_ids if client_ids is None else client_ids)
    unknown = sorted(set(self.client_ids) - set(all_ids))
    if unknown:
      raise errors.UserInputError(
          f'client_ids: {unknown[:3]} are not clients of client_data; pass '
          'ids from client_data.client_ids.')
    position = {client_id: i for i, client_id in enumerate(all_ids)}
    self._split_seeds = tuple(
        federated.derived_seed(seed, position[client_id])
        for client_id in self.client_ids)
    self._client_data = client_data
    self._validation_fraction = validation_fraction
    self._seed = seed

  @property
  def num_clients(self) -> int:
    return len(self.client_ids)

  def train_examples(self, client_index: int) -> arrays.LabeledArrays:
    examples, (train, _) = self._split_examples(client_index)
    return examples.take(train)

  def validation_examples(self, client_index: int) -> arrays.LabeledArrays:
    examples, (_, validation) = self._split_examples(client_index)
    return examples.take(validation)

  def only_client(self, client_index: int) -> 'ClientDataPopulation':
    """The population reduced to one client (local training alone)."""
    return ClientDataPopulation(
        self._client_data, validation_fraction=self._validation_fraction,
        seed=self._seed, client_ids=[self.client_ids[client_index]])

  def _split_examples(
      self, client_index: int
  ) -> tuple[arrays.LabeledArrays, tuple[np.ndarray, np.ndarray]]:
    examples = self._read_client(self.client_ids[client_index])
    split = partition_lib.train_validation_split(
        np.arange(len(examples)), examples.y, self._validation_fraction,
        seed=self._split_seeds[client_index])
    return examples, split

  def _read_client(self, client_id: str) -> arrays.LabeledArrays:
    """A client's examples as arrays: x as float32, y as int64."""
    dataset = self._client_data.create_tf_dataset_for_client(client_id)
    batches = [_feature_and_label(element) for element in
               dataset.batch(_READ_BATCH).as_numpy_iterator()]
    if not batches:
      x_spec, _ = _feature_and_label(dataset.element_spec)
      return arrays.LabeledArrays(
          x=np.zeros([0] + [d or 0 for d in x_spec.shape.as_list()],
                     np.float32),
          y=np.zeros([0], np.int64))
    return arrays.LabeledArrays(
        x=np.concatenate([x for x, _ in batches]).astype(np.float32,
                                                          copy=False),
        y=np.concatenate([y for _, y in batches]).astype(np.int64,
                                                          copy=False))
