"""Fed-Focal (Sarkar et al., "Fed-Focal Loss for imbalanced data
classification in Federated Learning", 2020; seeds/000) as a LearningProcess.

FedAvg whose clients train with focal loss (eq. 6) and, with psi > 0, report
their validation loss before and after local training per cohort slot, from
which `selection.PsiSelector` keeps a share psi of last round's improved
clients in the next cohort (eqs. 7-13; docs/fedfocal.md). psi = 0 is
uniform sampling and carves no validation split.
"""

import dataclasses

from tff_imbalance import compat
from tff_imbalance import losses
from tff_imbalance.learning import method
from tff_imbalance.learning import options as options_lib
from tff_imbalance.learning import selection
from tff_imbalance.learning.algorithms import fedavg_family
from tff_imbalance.learning.client_work import local_training
from tff_imbalance.models import spec as spec_lib

tff = compat.tff


def _selects_by_psi(options: 'FedFocalOptions') -> bool:
  return options.psi > 0


@dataclasses.dataclass(frozen=True)
class FedFocalOptions:
  """Fed-Focal's client selection (000 eqs. 7-13)."""
  FLAG_PREFIX = ''
  psi: float = options_lib.option(
      0.8, 'fedfocal (default 0.8) and virtual (default 0): share of last '
      'round\'s improved clients kept (000 eqs. 7-13), in [0, 1]; 0 is '
      'uniform sampling.')
  psi_improvement: str = options_lib.option(
      selection.GLOBAL, 'fedfocal, virtual: a client of round t "improved" '
      '(000 eq. 9) '
      'when its validation loss under the new global model w^{t+1} (global) '
      'or under its own trained model (local) is below its loss under w^t '
      '(docs/fedfocal.md).', choices=selection.IMPROVEMENTS,
      applies_if=(_selects_by_psi, '--algo=fedfocal with --psi > 0'))

  def __post_init__(self):
    selection.check_psi(self.psi)
    selection.check_improvement(self.psi_improvement)


def build_fedfocal(
    model_spec: spec_lib.ModelOrFactory,
    client_optimizer: tff.learning.optimizers.Optimizer,
    server_optimizer: tff.learning.optimizers.Optimizer,
    *,
    loss: losses.PerExampleLoss | None = None,
    validation_slots: int | None = None,
) -> tff.learning.templates.LearningProcess:
  """Fed-Focal: FedAvg with focal loss and per-slot validation losses.

  Client k minimises the focal loss FL(p_t) = -alpha (1 - p_t)^gamma log p_t
  (000 eq. 6) by local SGD; the server averages the deltas as FedAvg. With
  `validation_slots=K` each client also reports, at its cohort position, its
  validation loss L_k under the received w^t and under its trained w_k^{t+1}
  (eqs. 8-9), which psi selection reads (eqs. 10-13).

  What `next(state, client_data)` takes per client:

  * without `validation_slots`: the client's training dataset of batches
    `OrderedDict(x=float32 [B, *input_shape], y=int64 [B])`;
  * with `validation_slots=K`: `OrderedDict(train=<that dataset>,
    validation=<its validation batches, same structure>,
    slot=<a one-element int32 dataset: its position k in the cohort, 0..K-1>)`,
    the cohort always exactly K clients.

  `experiment.run_experiment('fedfocal', ...)` (or `runner.run` with
  `learning.registry.build_selector`) builds these inputs and runs psi
  selection over them; `client_data.ClientDataPopulation.round_inputs`
  builds them from a TFF `ClientData`.

  Args:
    model_spec: the model.
      A `ModelSpec`, or a no-argument Keras model factory whose last layer
      is a Dense `classifier` (`spec_lib.as_model_spec`).
    client_optimizer: local optimizer.
    server_optimizer: server optimizer.
    loss: the focal loss (also the validation loss); None takes the paper's
      gamma = 2, alpha = 1 (`losses.focal_loss()`).
    validation_slots: the cohort size K with psi selection; None without.

  Returns:
    A `tff.learning.templates.LearningProcess`.
  """
  model_spec = spec_lib.as_model_spec(model_spec)
  if loss is None:
    loss = losses.focal_loss()
  return fedavg_family.build_local_training_process(
      model_spec, client_optimizer, server_optimizer, loss=loss,
      validation_slots=validation_slots)


def _build(model_spec, config, options, context):
  """Fed-Focal always trains (and validates) with focal loss (000 eq. 6)."""
  del context  # Unused.
  return build_fedfocal(
      model_spec, config.client_optimizer(), config.server_sgd(),
      loss=config.focal_loss(),
      validation_slots=(config.clients_per_round
                        if _selects_by_psi(options) else None))


def psi_selector(psi: float, improvement: str, loss: losses.PerExampleLoss,
                 data, clients_per_round: int, seed: int, batch_size: int,
                 model_spec: spec_lib.ModelSpec):
  """psi selection over `data` (a `FederatedData`); uniform for psi = 0.

  The global reading evaluates each new global model on last round's cohort
  with `loss`, by a TFF computation built here (hence `model_spec`). Shared
  with VIRTUAL (000 runs Fed-Focal on it).
  """
  if psi <= 0:
    return selection.UniformSelector(data.num_clients, clients_per_round, seed)
  evaluate_cohort = None
  if improvement == selection.GLOBAL:
    evaluate_cohort = selection.cohort_evaluator(
        local_training.build_cohort_validation_loss(
            model_spec, loss, clients_per_round),
        data, batch_size)
  return selection.PsiSelector(
      data.num_clients, clients_per_round, psi, seed,
      improvement=improvement, evaluate_cohort=evaluate_cohort)


def make_selector(options: FedFocalOptions, config: method.AlgorithmConfig,
                  data, clients_per_round: int, seed: int,
                  model_spec: spec_lib.ModelSpec):
  """Fed-Focal's psi selection (`psi_selector`) with its focal loss."""
  return psi_selector(options.psi, options.psi_improvement,
                      config.focal_loss(), data, clients_per_round, seed,
                      config.batch_size, model_spec)


FEDFOCAL = method.Method(
    'fedfocal', _build, FedFocalOptions, local_loss=method.LocalLoss.FOCAL,
    make_selector=make_selector, uses_validation=_selects_by_psi)
