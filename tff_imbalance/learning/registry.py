"""`--algo` name -> process builder, with the hyperparameters they share.

Adding an algorithm is one entry in `ALGORITHMS`: a builder that takes the
model spec, an `AlgorithmConfig` and a `TaskContext` (what the task knows that
some methods need: class counts, the population size, server-side auxiliary
data) and returns a `LearningProcess`. The runner and the tasks know nothing
else about algorithms. Every `AlgorithmConfig` field is set from the task flag
of the same name where one exists (`tasks/common.py`).
"""

import dataclasses
from typing import Callable, Optional

import numpy as np

from tff_imbalance import compat
from tff_imbalance import errors
from tff_imbalance import losses
from tff_imbalance.data import arrays
from tff_imbalance.learning.algorithms import fedavg_family
from tff_imbalance.models import spec as spec_lib

tff = compat.tff


@dataclasses.dataclass(frozen=True)
class AlgorithmConfig:
  """Hyperparameters shared by the registered algorithms.

  Attributes:
    client_lr: local SGD learning rate.
    client_momentum: local SGD momentum (0 for plain SGD).
    server_lr: server learning rate; None takes the algorithm's default (1.0
      for the SGD servers, where 1.0 is plain FedAvg; 0.01 for FedAdam).
    server_momentum: FedAvgM's server momentum.
    fedprox_mu: FedProx's proximal strength mu.
    adam_beta1: FedAdam's beta1.
    adam_beta2: FedAdam's beta2.
    adam_epsilon: FedAdam's tau (adaptivity), 1e-3 as in Reddi et al. 2021.
    loss: local loss, 'ce' or 'focal' (000 eq. 6), for every algorithm.
    focal_gamma: focal loss gamma.
    focal_alpha: focal loss alpha: one weight, or one per class.
    clients_per_round: the fixed cohort size K (psi selection's slots).
    psi: Fed-Focal's psi, the share of last round's improved clients kept.
  """
  client_lr: float = 0.05
  client_momentum: float = 0.0
  server_lr: Optional[float] = None
  server_momentum: float = 0.9
  fedprox_mu: float = 0.01
  adam_beta1: float = 0.9
  adam_beta2: float = 0.99
  adam_epsilon: float = 1e-3
  loss: str = 'ce'
  focal_gamma: float = 2.0
  focal_alpha: tuple[float, ...] = (1.0,)
  clients_per_round: int = 10
  psi: float = 0.8

  def __post_init__(self):
    if not self.client_lr > 0:
      raise errors.UserInputError(
          f'--client_lr must be > 0 (got {self.client_lr}).')
    if self.server_lr is not None and not self.server_lr > 0:
      raise errors.UserInputError(
          f'--server_lr must be > 0 (got {self.server_lr}).')
    for name in ('client_momentum', 'server_momentum'):
      if not 0 <= getattr(self, name) < 1:
        raise errors.UserInputError(
            f'--{name} must be in [0, 1) (got {getattr(self, name)}).')
    if self.fedprox_mu < 0:
      raise errors.UserInputError(
          f'--fedprox_mu must be >= 0 (got {self.fedprox_mu}).')

    if self.loss not in LOSSES:
      raise errors.UserInputError(
          f'--loss must be one of {", ".join(LOSSES)} (got {self.loss!r}).')
    self.per_example_loss()  # Validates the loss's own parameters now.

  def per_example_loss(self) -> losses.PerExampleLoss:
    if self.loss == 'focal':
      alpha = self.focal_alpha[0] if len(self.focal_alpha) == 1 else list(
          self.focal_alpha)
      return losses.focal_loss(gamma=self.focal_gamma, alpha=alpha)
    return losses.cross_entropy

  def client_optimizer(self) -> tff.learning.optimizers.Optimizer:
    return tff.learning.optimizers.build_sgdm(
        learning_rate=self.client_lr, momentum=self.client_momentum or None)

  def server_lr_or(self, default: float) -> float:
    return default if self.server_lr is None else self.server_lr

  def server_sgd(self, momentum: float = 0.0):
    return tff.learning.optimizers.build_sgdm(
        learning_rate=self.server_lr_or(1.0), momentum=momentum or None)


LOSSES = ('ce', 'focal')


@dataclasses.dataclass(frozen=True)
class TaskContext:
  """What the task knows about its data that some algorithms need.

  Attributes:
    num_classes: number of classes C.
    num_clients: size of the client population.
    train_class_counts: [C] training examples per class over all clients.
    aux_data: server-held auxiliary examples (held out of every client), or
      None where the task keeps none.
  """
  num_classes: int
  num_clients: int
  train_class_counts: np.ndarray
  aux_data: Optional[arrays.LabeledArrays] = None


Builder = Callable[[spec_lib.ModelSpec, AlgorithmConfig, TaskContext],
                   tff.learning.templates.LearningProcess]


def _fedavg_with_server(model_spec, config, server_optimizer):
  """FedAvg's round with a chosen server optimizer, on our client work.

  The same arithmetic as TFF's `build_weighted_fed_avg` (tested equal in
  tests/test_learning.py) and measurably faster per round (results/speed.md),
  with the flagged per-example loss.
  """
  return fedavg_family.build_local_training_process(
      model_spec, config.client_optimizer(), server_optimizer,
      loss=config.per_example_loss())


def _fedavg(model_spec, config, context):
  del context  # Unused.
  return _fedavg_with_server(model_spec, config, config.server_sgd())


def _fedavgm(model_spec, config, context):
  del context  # Unused.
  return _fedavg_with_server(
      model_spec, config, config.server_sgd(momentum=config.server_momentum))


def _fedadam(model_spec, config, context):
  del context  # Unused.
  server = tff.learning.optimizers.build_adam(
      learning_rate=config.server_lr_or(0.01), beta_1=config.adam_beta1,
      beta_2=config.adam_beta2, epsilon=config.adam_epsilon)
  return _fedavg_with_server(model_spec, config, server)


def _fedfocal(model_spec, config, context):
  """Fed-Focal (000): focal loss (alpha=1, gamma=2 by default) on FedAvg, with
  per-slot validation losses for psi client selection (eqs. 7-13)."""
  del context  # Unused.
  focal = dataclasses.replace(config, loss='focal')
  return fedavg_family.build_local_training_process(
      model_spec, config.client_optimizer(), config.server_sgd(),
      loss=focal.per_example_loss(),
      validation_slots=config.clients_per_round)


def _fedprox(model_spec, config, context):
  del context  # Unused.
  return fedavg_family.build_fedprox(model_spec, config.client_optimizer(),
                                     config.server_sgd(), config.fedprox_mu,
                                     loss=config.per_example_loss())


ALGORITHMS: dict[str, Builder] = {
    'fedavg': _fedavg,
    'fedavgm': _fedavgm,
    'fedadam': _fedadam,
    'fedprox': _fedprox,
    'fedfocal': _fedfocal,
}

# Algorithms whose clients report per-slot validation losses and whose cohorts
# come from `selection.PsiSelector`.
PSI_SELECTION_ALGORITHMS = frozenset({'fedfocal'})


def algorithm_names() -> tuple[str, ...]:
  return tuple(sorted(ALGORITHMS))


def build_process(name: str, model_spec: spec_lib.ModelSpec,
                  config: AlgorithmConfig, context: TaskContext
                 ) -> tff.learning.templates.LearningProcess:
  """Builds the named algorithm's learning process.

  Raises:
    errors.UserInputError: for an unknown name.
  """
  if name not in ALGORITHMS:
    raise errors.UserInputError(
        f'--algo must be one of {", ".join(algorithm_names())} '
        f'(got {name!r}).')
  return ALGORITHMS[name](model_spec, config, context)
