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
from tff_imbalance.learning.algorithms import balanced_softmax
from tff_imbalance.learning.algorithms import balancefl
from tff_imbalance.learning.algorithms import centralized
from tff_imbalance.learning.algorithms import climb
from tff_imbalance.learning.algorithms import creff
from tff_imbalance.learning.algorithms import fedavg_family
from tff_imbalance.learning.algorithms import ratio
from tff_imbalance.learning.algorithms import redgrape
from tff_imbalance.learning.client_work import local_training
from tff_imbalance.learning import selection
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
    psi_improvement: Fed-Focal's reading of "improved" (000 eq. 9):
      'global' (new global model vs received) or 'local' (own trained model
      vs received); see `selection.PsiSelector`.
    local_epochs: the clients' local epochs (the monitor replays them).
    batch_size: the clients' batch size (the monitor replays it).
    monitor: wrap any algorithm with the composition monitor (002 sec 3.2).
    ratio_alpha: Ratio Loss alpha (002 eq. 10).
    ratio_beta: Ratio Loss beta (002 eq. 10).
    ratio_threshold: the monitor's filter threshold T_Ra (002 eq. 7).
    ratio_start_round: first round with Ratio Loss weights (002 Table 1).
    ratio_weighting: 'per_example' (002 eq. 11) or 'as_coded' (reference).
    ratio_normalize: 'mean' (class weights of mean 1) or 'none' (002 eq. 10).
    climb_epsilon: CLIMB's constraint tolerance epsilon.
    climb_dual_lr: CLIMB's dual step size eta_D.
    climb_max_dual: CLIMB's upper clip of every dual.
    climb_duals: whose losses CLIMB's dual step reads, 'all' (the official
      algorithm) or 'cohort' (cheaper for large populations).
    climb_primal_rounds: CLIMB's rounds per dual step (the official 5; 004: 1).
    balanced_softmax_prior: Balanced Softmax's prior, 'local' or 'global'.
    balancefl_kd: BalanceFL knowledge inheritance (003 eqs. 3-4, 8).
    balancefl_balanced_sampling: BalanceFL class-balanced sampling (eq. 5).
    balancefl_feature_aug: BalanceFL feature-space augmentation (eqs. 6-7).
    balancefl_smooth: BalanceFL smooth regulariser (eq. 9).
    balancefl_temperature: BalanceFL distillation temperature T.
    balancefl_smooth_weight: BalanceFL lambda_1 (eq. 10).
    balancefl_absent: BalanceFL absent classes per 'client' or 'batch'.
    redgrape_lambda: RedGrape's re-balancing strength lambda (004 eq. 13).
    redgrape_threshold: RedGrape's local balanced-set threshold T (eq. 9).
    creff_features_per_class: CReFF's federated features per class.
    creff_match_steps: CReFF's gradient-matching steps per round.
    creff_feature_lr: CReFF's learning rate of the federated features.
    creff_retrain_epochs: CReFF's classifier re-training epochs per round.
    creff_retrain_batch_size: CReFF's re-training mini-batch size.
    creff_retrain_lr: CReFF's re-training learning rate.
    creff_retrain_init: CReFF's re-trained classifier start, 'fresh' or
      'zero'.
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
  psi_improvement: str = 'global'
  # Ratio Loss and the composition monitor (002).
  local_epochs: int = 1
  batch_size: int = 32
  monitor: bool = False
  ratio_alpha: float = 1.0
  ratio_beta: float = 0.1
  ratio_threshold: float = 1.25
  ratio_start_round: int = 1
  ratio_weighting: str = 'per_example'
  ratio_normalize: str = 'mean'
  # CLIMB (Shen et al. 2022; 004 appendix C.2 defaults for MNIST-LT).
  climb_epsilon: float = 0.01
  climb_dual_lr: float = 2.0
  climb_max_dual: float = 100.0
  climb_duals: str = 'all'
  climb_primal_rounds: int = 1
  # Balanced Softmax (Ren et al. 2020).
  balanced_softmax_prior: str = 'local'
  # BalanceFL (003); every component on is the paper's method.
  balancefl_kd: bool = True
  balancefl_balanced_sampling: bool = True
  balancefl_feature_aug: bool = True
  balancefl_smooth: bool = True
  balancefl_temperature: float = 2.0
  balancefl_smooth_weight: float = 0.128
  balancefl_absent: str = 'client'
  # RedGrape (004; appendix C.2 and the reference code: lambda 0.1, T 8).
  redgrape_lambda: float = 0.1
  redgrape_threshold: int = 8
  # CReFF (Shang et al. 2022; the CReFF code's defaults).
  creff_features_per_class: int = 100
  creff_match_steps: int = 100
  creff_feature_lr: float = 0.1
  creff_retrain_epochs: int = 300
  creff_retrain_batch_size: int = 32
  creff_retrain_lr: float = 0.01
  creff_retrain_init: str = 'fresh'

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
    selection.check_psi(self.psi)
    selection.check_improvement(self.psi_improvement)
    self._check_ratio_loss()
    self._check_climb_and_balanced_softmax()
    self.balancefl_options(seed=0)  # Validates BalanceFL's flags now.
    self._check_redgrape_and_creff()

  def _check_ratio_loss(self):
    if not self.ratio_alpha > 0:
      raise errors.UserInputError(
          f'--ratio_alpha must be > 0 (got {self.ratio_alpha}).')
    if not self.ratio_beta >= 0:
      raise errors.UserInputError(
          f'--ratio_beta must be >= 0 (got {self.ratio_beta}).')
    if not self.ratio_threshold > 0:
      raise errors.UserInputError(
          f'--ratio_threshold must be > 0 (got {self.ratio_threshold}).')
    if self.ratio_start_round < 1:
      raise errors.UserInputError(
          f'--ratio_start_round must be >= 1 (got {self.ratio_start_round}); '
          '1 re-weights from the first round.')
    losses.ratio_loss(self.ratio_weighting)  # Validates the weighting.
    if self.ratio_normalize not in ratio.RATIO_NORMALIZATIONS:
      raise errors.UserInputError(
          f'--ratio_normalize must be one of '
          f'{", ".join(ratio.RATIO_NORMALIZATIONS)} (got '
          f'{self.ratio_normalize!r}).')

  def _check_climb_and_balanced_softmax(self):
    if not self.climb_epsilon >= 0:
      raise errors.UserInputError(
          f'--climb_epsilon must be >= 0 (got {self.climb_epsilon}).')
    for name in ('climb_dual_lr', 'climb_max_dual'):
      if not getattr(self, name) > 0:
        raise errors.UserInputError(
            f'--{name} must be > 0 (got {getattr(self, name)}).')
    if self.climb_duals not in climb.DUAL_SCOPES:
      raise errors.UserInputError(
          f'--climb_duals must be one of {", ".join(climb.DUAL_SCOPES)} (got '
          f'{self.climb_duals!r}).')
    if self.climb_primal_rounds < 1:
      raise errors.UserInputError(
          f'--climb_primal_rounds must be >= 1 (got '
          f'{self.climb_primal_rounds}).')
    if self.balanced_softmax_prior not in balanced_softmax.PRIORS:
      raise errors.UserInputError(
          f'--balanced_softmax_prior must be one of '
          f'{", ".join(balanced_softmax.PRIORS)} (got '
          f'{self.balanced_softmax_prior!r}).')

  def _check_redgrape_and_creff(self):
    if not self.redgrape_lambda >= 0:
      raise errors.UserInputError(
          f'--redgrape_lambda must be >= 0 (got {self.redgrape_lambda}).')
    for name in ('redgrape_threshold', 'creff_features_per_class',
                 'creff_match_steps', 'creff_retrain_epochs',
                 'creff_retrain_batch_size'):
      if getattr(self, name) < 1:
        raise errors.UserInputError(
            f'--{name} must be >= 1 (got {getattr(self, name)}).')
    if not self.creff_feature_lr > 0:
      raise errors.UserInputError(
          f'--creff_feature_lr must be > 0 (got {self.creff_feature_lr}).')
    if not self.creff_retrain_lr > 0:
      raise errors.UserInputError(
          f'--creff_retrain_lr must be > 0 (got {self.creff_retrain_lr}).')
    if self.creff_retrain_init not in creff.RETRAIN_INITS:
      raise errors.UserInputError(
          f'--creff_retrain_init must be one of '
          f'{", ".join(creff.RETRAIN_INITS)} (got '
          f'{self.creff_retrain_init!r}).')

  def balancefl_options(self, seed: int) -> balancefl.BalanceFLOptions:
    return balancefl.BalanceFLOptions(
        knowledge_inheritance=self.balancefl_kd,
        balanced_sampling=self.balancefl_balanced_sampling,
        feature_augmentation=self.balancefl_feature_aug,
        smooth_regularization=self.balancefl_smooth,
        temperature=self.balancefl_temperature,
        smooth_weight=self.balancefl_smooth_weight,
        absent=self.balancefl_absent, batch_size=self.batch_size, seed=seed)

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
  tests/test_learning.py), at the plain-TF floor's speed per round
  (results/speed.md), with the flagged per-example loss.
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


def _fedfocal_loss(config):
  """Fed-Focal always trains (and validates) with focal loss (000 eq. 6)."""
  return dataclasses.replace(config, loss='focal').per_example_loss()


def _fedfocal(model_spec, config, context):
  """Fed-Focal (000): focal loss (alpha=1, gamma=2 by default) on FedAvg, with
  per-slot validation losses for psi client selection (eqs. 7-13) when
  psi > 0 (psi = 0 is uniform sampling and needs no validation)."""
  del context  # Unused.
  return fedavg_family.build_local_training_process(
      model_spec, config.client_optimizer(), config.server_sgd(),
      loss=_fedfocal_loss(config),
      validation_slots=(config.clients_per_round
                        if uses_validation('fedfocal', config) else None))


def _fedprox(model_spec, config, context):
  del context  # Unused.
  return fedavg_family.build_fedprox(model_spec, config.client_optimizer(),
                                     config.server_sgd(), config.fedprox_mu,
                                     loss=config.per_example_loss())


def _ratio(model_spec, config, context):
  """Ratio Loss with the composition monitor (002 secs 3.2-3.3)."""
  ratio.check_aux_data(context.aux_data, '--algo=ratio')
  return ratio.build_ratio_loss(
      model_spec, config.client_optimizer(), config.server_sgd(),
      context.aux_data, local_epochs=config.local_epochs,
      batch_size=config.batch_size, alpha=config.ratio_alpha,
      beta=config.ratio_beta, threshold=config.ratio_threshold,
      start_round=config.ratio_start_round, weighting=config.ratio_weighting,
      normalize=config.ratio_normalize)


def _climb(model_spec, config, context):
  """CLIMB (Shen et al. 2022): client re-weighting by per-client duals."""
  return climb.build_climb(
      model_spec, config.client_optimizer(), config.server_sgd(),
      context.num_clients, epsilon=config.climb_epsilon,
      dual_lr=config.climb_dual_lr, max_dual=config.climb_max_dual,
      duals=config.climb_duals, primal_rounds=config.climb_primal_rounds,
      loss=config.per_example_loss())


def _balanced_softmax(model_spec, config, context):
  """Balanced Softmax (Ren et al. 2020) on FedAvg, local or global prior."""
  return balanced_softmax.build_balanced_softmax(
      model_spec, config.client_optimizer(), config.server_sgd(),
      prior=config.balanced_softmax_prior,
      train_class_counts=context.train_class_counts,
      local_epochs=config.local_epochs)


def _balancefl(model_spec, config, context):
  """BalanceFL (003): self-balancing local updates on FedAvg."""
  del context  # Unused.
  return balancefl.build_balancefl(
      model_spec, config.client_optimizer(), config.server_sgd(),
      config.balancefl_options(seed=model_spec.seed))


def _centralized(model_spec, config, context):
  """One model trained on one client's data: the pool, or (local) each own."""
  del context  # Unused.
  return centralized.build_centralized(model_spec, config.client_optimizer(),
                                       loss=config.per_example_loss())


def _redgrape(model_spec, config, context):
  """RedGrape (004): two-stream head, classifier re-balancing (Alg. 1)."""
  del context  # Unused.
  return redgrape.build_redgrape(
      model_spec, config.client_optimizer(), config.server_sgd(),
      learning_rate=config.client_lr,
      rebalance_strength=config.redgrape_lambda,
      threshold=config.redgrape_threshold, local_epochs=config.local_epochs)


def _creff(model_spec, config, context):
  """CReFF (Shang et al. 2022): classifier re-trained on federated features."""
  del context  # Unused.
  return creff.build_creff(
      model_spec, config.client_optimizer(), config.server_sgd(),
      creff.CReFFOptions(
          features_per_class=config.creff_features_per_class,
          match_steps=config.creff_match_steps,
          feature_lr=config.creff_feature_lr,
          retrain_epochs=config.creff_retrain_epochs,
          retrain_batch_size=config.creff_retrain_batch_size,
          retrain_lr=config.creff_retrain_lr,
          retrain_init=config.creff_retrain_init,
          seed=model_spec.seed))


ALGORITHMS: dict[str, Builder] = {
    'fedavg': _fedavg,
    'fedavgm': _fedavgm,
    'fedadam': _fedadam,
    'fedprox': _fedprox,
    'fedfocal': _fedfocal,
    'ratio': _ratio,
    'climb': _climb,
    'balanced_softmax': _balanced_softmax,
    'centralized': _centralized,
    'local': _centralized,
    'balancefl': _balancefl,
    'redgrape': _redgrape,
    'creff': _creff,
}

# Algorithms whose clients report per-slot validation losses and whose cohorts
# come from `selection.PsiSelector`.
PSI_SELECTION_ALGORITHMS = frozenset({'fedfocal'})
# Algorithms that run the composition monitor themselves (--monitor is moot).
MONITORED_ALGORITHMS = frozenset({'ratio'})
# Reference rows, not federated: `centralized` trains on every client's data
# pooled into one virtual client (`FederatedData.pooled`); `local` trains one
# model per client on its own data (`local_only.run_each_client`).
POOLED_DATA_ALGORITHMS = frozenset({'centralized'})
LOCAL_ONLY_ALGORITHMS = frozenset({'local'})


# Which algorithms each algorithm flag applies to, as (predicate on the
# algorithm's name and config, where it applies). A flag not listed applies to
# every algorithm; `inapplicable_flags` names the listed ones set in vain.
_LOSS_ALGORITHMS = frozenset({'fedavg', 'fedavgm', 'fedadam', 'fedprox',
                              'climb', 'centralized', 'local'})
_ONE_CLIENT_ALGORITHMS = POOLED_DATA_ALGORITHMS | LOCAL_ONLY_ALGORITHMS


def _only(*names: str):
  return (lambda name, config: name in names,
          ' or '.join(f'--algo={n}' for n in names))


_FLAG_SCOPES = {
    'server_momentum': _only('fedavgm'),
    'fedprox_mu': _only('fedprox'),
    'loss': (lambda name, config: name in _LOSS_ALGORITHMS,
             f'--algo={",".join(sorted(_LOSS_ALGORITHMS))}'),
    'focal_gamma': (
        lambda name, config: name == 'fedfocal' or (
            config.loss == 'focal' and name in _LOSS_ALGORITHMS),
        '--algo=fedfocal or --loss=focal'),
    'psi': _only('fedfocal'),
    'psi_improvement': (lambda name, config: uses_validation(name, config),
                        '--algo=fedfocal with --psi > 0'),
    'validation_fraction': (
        lambda name, config: uses_validation(name, config),
        '--algo=fedfocal with --psi > 0; no validation split is carved'),
    'ratio_threshold': (lambda name, config: name == 'ratio' or config.monitor,
                        '--algo=ratio or --monitor'),
    'balanced_softmax_prior': _only('balanced_softmax'),
    'server_lr': (lambda name, config: name not in _ONE_CLIENT_ALGORITHMS,
                  'federated algorithms (not --algo=centralized or local)'),
    'clients_per_round': (
        lambda name, config: name not in _ONE_CLIENT_ALGORITHMS,
        'federated algorithms (not --algo=centralized or local)'),
}
_FLAG_SCOPES['focal_alpha'] = _FLAG_SCOPES['focal_gamma']
for _name in ('ratio_alpha', 'ratio_beta', 'ratio_start_round',
              'ratio_weighting', 'ratio_normalize'):
  _FLAG_SCOPES[_name] = _only('ratio')
# Method-specific prefixes: every --<prefix>* flag belongs to one method.
_FLAG_PREFIXES = {'climb_': 'climb', 'balancefl_': 'balancefl',
                  'redgrape_': 'redgrape', 'creff_': 'creff'}


def inapplicable_flags(name: str, config: AlgorithmConfig,
                       flag_names) -> list[tuple[str, str]]:
  """The flags among `flag_names` that algorithm `name` ignores.

  Args:
    name: the `--algo`.
    config: its configuration (some flags apply only with others).
    flag_names: the flags the user set.

  Returns:
    (flag, where it applies) pairs, in the order of `flag_names`.
  """
  ignored = []
  for flag in flag_names:
    scope = _FLAG_SCOPES.get(flag)
    prefix = next((p for p in _FLAG_PREFIXES if flag.startswith(p)), None)
    if scope is None and prefix is not None:
      scope = _only(_FLAG_PREFIXES[prefix])
    if scope is not None and not scope[0](name, config):
      ignored.append((flag, scope[1]))
  return ignored


def uses_validation(name: str, config: AlgorithmConfig) -> bool:
  """Whether `name` reads per-client validation splits: psi selection with
  psi > 0. Only such algorithms carve a split out of the clients' data."""
  return name in PSI_SELECTION_ALGORITHMS and config.psi > 0


def build_selector(name: str, config: AlgorithmConfig, data,
                   clients_per_round: int, seed: int, model_spec=None):
  """The client selector of algorithm `name` over `data` (a `FederatedData`).

  psi selection (Fed-Focal, psi > 0) with `config.psi_improvement`; the
  global reading evaluates each new global model on last round's cohort with
  a TFF computation built here (hence `model_spec`). Uniform otherwise.
  """
  if not uses_validation(name, config):
    return selection.UniformSelector(data.num_clients, clients_per_round, seed)
  evaluate_cohort = None
  if config.psi_improvement == selection.GLOBAL:
    evaluate_cohort = selection.cohort_evaluator(
        local_training.build_cohort_validation_loss(
            model_spec, _fedfocal_loss(config), clients_per_round),
        data, config.batch_size)
  return selection.PsiSelector(
      data.num_clients, clients_per_round, config.psi, seed,
      improvement=config.psi_improvement, evaluate_cohort=evaluate_cohort)


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
  watch = config.monitor and name not in MONITORED_ALGORITHMS
  if watch:
    ratio.check_aux_data(context.aux_data, '--monitor')
  process = ALGORITHMS[name](model_spec, config, context)
  if watch:
    process = ratio.build_monitored(
        process, model_spec, config.client_optimizer(), context.aux_data,
        local_epochs=config.local_epochs, batch_size=config.batch_size,
        threshold=config.ratio_threshold)
  return process
