"""What a registered method is, and what every method shares.

A method's file (`learning/algorithms/<method>.py`) declares one `Method`:
its name, how the registry builds it (`build(model_spec, config, options,
context)`), its options dataclass (`learning/options.py`), how the task runs
its clients, and, where it has one, its client selector. `AlgorithmConfig`
holds the hyperparameters every method shares; `TaskContext` what the task
knows about its data that some methods need. The registry
(`learning/registry.py`) only collects the methods.
"""

import dataclasses
import enum
from typing import Any, Callable, Optional

import numpy as np

from tff_imbalance import compat
from tff_imbalance import errors
from tff_imbalance import losses
from tff_imbalance.data import arrays
from tff_imbalance.learning import mfe
from tff_imbalance.learning import monitor as monitor_lib
from tff_imbalance.models import spec as spec_lib

tff = compat.tff

LOSSES = ('ce', 'focal', 'mse', *mfe.MFE_LOSSES)


@dataclasses.dataclass(frozen=True)
class AlgorithmConfig:
  """Hyperparameters shared by the registered methods.

  Attributes:
    client_lr: local SGD learning rate.
    client_momentum: local SGD momentum (0 for plain SGD).
    server_lr: server learning rate; None takes the method's default (1.0
      for the SGD servers, where 1.0 is plain FedAvg; 0.01 for FedAdam).
    loss: local loss, for the methods whose `local_loss` is
      `LocalLoss.FLAGGED`: 'ce', 'focal' (000 eq. 6), 'mse' (squared error
      of the softmax outputs), 'mfe' or 'msfe' (Wang et al. 2016; methods
      with `minority_losses` only, `learning.mfe`).
    mfe_minority: where MFE/MSFE's minority classes come from: 'local' (each
      client's own counts, 002's MFE-L) or 'global' (the composition
      monitor's estimate, MFE-G).
    mfe_minority_share: a class is a minority class when its share is below
      this fraction of a balanced class's share 1/C.
    focal_gamma: focal loss gamma.
    focal_alpha: focal loss alpha: one weight, or one per class.
    clients_per_round: the fixed cohort size K.
    local_epochs: the clients' local epochs (the monitor replays them).
    batch_size: the clients' batch size (the monitor replays it).
    monitor: wrap any method with the composition monitor (002 sec 3.2).
    ratio_threshold: the monitor's filter threshold T_Ra (002 eq. 7), for
      Ratio Loss and --monitor.
  """
  client_lr: float = 0.05
  client_momentum: float = 0.0
  server_lr: Optional[float] = None
  loss: str = 'ce'
  focal_gamma: float = 2.0
  focal_alpha: tuple[float, ...] = (1.0,)
  mfe_minority: str = 'local'
  mfe_minority_share: float = mfe.DEFAULT_MINORITY_SHARE
  clients_per_round: int = 10
  local_epochs: int = 1
  batch_size: int = 32
  monitor: bool = False
  ratio_threshold: float = monitor_lib.DEFAULT_THRESHOLD

  def __post_init__(self):
    if not self.client_lr > 0:
      raise errors.UserInputError(
          f'--client_lr must be > 0 (got {self.client_lr}).')
    if self.server_lr is not None and not self.server_lr > 0:
      raise errors.UserInputError(
          f'--server_lr must be > 0 (got {self.server_lr}).')
    if not 0 <= self.client_momentum < 1:
      raise errors.UserInputError(
          f'--client_momentum must be in [0, 1) (got {self.client_momentum}).')
    if self.loss not in LOSSES:
      raise errors.UserInputError(
          f'--loss must be one of {", ".join(LOSSES)} (got {self.loss!r}).')
    self.focal_loss()  # Validates the loss's own parameters now.
    if self.mfe_minority not in mfe.MINORITY_SOURCES:
      raise errors.UserInputError(
          f'--mfe_minority must be one of {", ".join(mfe.MINORITY_SOURCES)} '
          f'(got {self.mfe_minority!r}).')
    mfe.check_minority_share(self.mfe_minority_share)
    if not self.ratio_threshold > 0:
      raise errors.UserInputError(
          f'--ratio_threshold must be > 0 (got {self.ratio_threshold}).')

  def focal_loss(self) -> losses.PerExampleLoss:
    """Focal loss with the flagged gamma and alpha (000 eq. 6)."""
    alpha = self.focal_alpha[0] if len(self.focal_alpha) == 1 else list(
        self.focal_alpha)
    return losses.focal_loss(gamma=self.focal_gamma, alpha=alpha)

  def per_example_loss(self) -> losses.PerExampleLoss:
    """The flagged local loss (--loss); MFE and MSFE read a [C] minority
    mask as their context (`learning.mfe`)."""
    if self.loss == 'focal':
      return self.focal_loss()
    if self.loss == 'mse':
      return losses.squared_error
    if self.loss in mfe.MFE_LOSSES:
      return losses.mean_false_error(squared=self.loss == 'msfe')
    return losses.cross_entropy

  @property
  def uses_minority(self) -> bool:
    """Whether the loss needs minority classes (--loss=mfe or msfe)."""
    return self.loss in mfe.MFE_LOSSES

  @property
  def loss_runs_monitor(self) -> bool:
    """Whether the loss runs the composition monitor (MFE-G)."""
    return self.uses_minority and self.mfe_minority == 'global'

  def client_optimizer(self) -> tff.learning.optimizers.Optimizer:
    return tff.learning.optimizers.build_sgdm(
        learning_rate=self.client_lr, momentum=self.client_momentum or None)

  def server_lr_or(self, default: float) -> float:
    return default if self.server_lr is None else self.server_lr

  def server_sgd(self, momentum: float = 0.0):
    return tff.learning.optimizers.build_sgdm(
        learning_rate=self.server_lr_or(1.0), momentum=momentum or None)


@dataclasses.dataclass(frozen=True)
class TaskContext:
  """What the task knows about its data that some methods need.

  Attributes:
    num_classes: number of classes C.
    num_clients: size of the client population.
    train_class_counts: [C] training examples per class over all clients.
    aux_data: server-held auxiliary examples (held out of every client), or
      None where the task keeps none.
    client_sizes: [N] training examples per client (VIRTUAL's client
      weights n_k / N), or None where the caller does not give them.
  """
  num_classes: int
  num_clients: int
  train_class_counts: np.ndarray
  aux_data: Optional[arrays.LabeledArrays] = None
  client_sizes: Optional[np.ndarray] = None


class ClientMode(enum.Enum):
  """How the task runs a method's clients."""
  FEDERATED = 'federated'  # A cohort of the population each round.
  POOLED = 'pooled'  # One virtual client holding every client's data.
  EACH_ALONE = 'each_alone'  # One model per client on its own data.


class LocalLoss(enum.Enum):
  """Which shared loss flags a method's local training reads."""
  FLAGGED = 'flagged'  # --loss, and --focal_* with --loss=focal.
  FOCAL = 'focal'  # Always focal loss: --focal_*, not --loss.
  OWN = 'own'  # Its own objective: none of them.


def _never(options: Any) -> bool:
  del options  # No option makes the method read validation splits.
  return False


# `build(model_spec, config, options, context) -> LearningProcess`.
Builder = Callable[[spec_lib.ModelSpec, AlgorithmConfig, Any, TaskContext],
                   tff.learning.templates.LearningProcess]


@dataclasses.dataclass(frozen=True)
class Method:
  """One registered method (`--algo`).

  Attributes:
    name: the `--algo` value.
    build: `(model_spec, config, options, context) -> LearningProcess`;
      `options` is an instance of `options_class` (None without one).
    options_class: the method's options dataclass (`learning/options.py`),
      whose fields are its flags; None for a method without options.
    client_mode: how the task runs its clients.
    local_loss: which shared loss flags apply to it.
    make_selector: optional `(options, config, data, clients_per_round, seed,
      model_spec) -> selector` of its cohorts; uniform selection otherwise.
    uses_validation: `(options) -> bool`, whether its clients read
      per-client validation splits (only then is one carved).
    runs_monitor: whether it runs the composition monitor itself (--monitor
      is then moot).
    minority_losses: whether its local loop carries MFE/MSFE's minority
      classes (`--loss=mfe|msfe`; the FedAvg family's methods).
    dense_models_only: whether it takes only a stack of Dense layers (VIRTUAL's
      Gaussian weights: `--model=mlp` or `mlp100`); benchmarks over other
      models leave it out.
    uses_client_optimizer: whether its clients train with --client_lr and
      --client_momentum (VIRTUAL steps its natural parameters its own way).
  """
  name: str
  build: Builder
  options_class: Optional[type] = None
  client_mode: ClientMode = ClientMode.FEDERATED
  local_loss: LocalLoss = LocalLoss.FLAGGED
  make_selector: Optional[Callable[..., Any]] = None
  uses_validation: Callable[[Any], bool] = _never
  runs_monitor: bool = False
  minority_losses: bool = False
  dense_models_only: bool = False
  uses_client_optimizer: bool = True

  def default_options(self) -> Any:
    """The options at their defaults (None without an options class)."""
    return None if self.options_class is None else self.options_class()
