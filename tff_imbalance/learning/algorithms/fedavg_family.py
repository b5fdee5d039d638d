"""FedAvg and its server-optimizer and proximal variants.

FedAvg (McMahan et al. 2017), FedAvgM and FedAdam (Reddi et al. 2021, "Adaptive
Federated Optimization", Algorithm 2) are `build_local_training_process`, our
shared local-training client work composed with TFF's broadcast, mean and
server-optimizer finalizer. `build_tff_fedavg` wraps TFF's own
`tff.learning.algorithms.build_weighted_fed_avg` as the reference: the tests
check that both give the same weights; ours runs at the plain-TF floor's
speed per round (`bench.speed`). FedProx (Li et al. 2020) is ours too because TFF 0.87's
`build_weighted_fed_prox` adds the proximal gradient with the wrong sign
(`learning/templates/proximal_client_work.py`).
"""

import dataclasses
from typing import Optional

import numpy as np

from tff_imbalance import compat
from tff_imbalance import losses
from tff_imbalance.learning import method
from tff_imbalance.learning import mfe
from tff_imbalance.learning import options as options_lib
from tff_imbalance.learning.client_work import local_training
from tff_imbalance.models import spec as spec_lib

tff = compat.tff


@dataclasses.dataclass(frozen=True)
class FedAvgMOptions:
  """FedAvgM's server momentum (Hsu et al. 2019)."""
  FLAG_PREFIX = 'server_'
  momentum: float = options_lib.option(0.9, 'FedAvgM server momentum.')

  def __post_init__(self):
    options_lib.require(self, 'momentum', 0 <= self.momentum < 1, 'in [0, 1)')


@dataclasses.dataclass(frozen=True)
class FedAdamOptions:
  """FedAdam's server Adam (Reddi et al. 2021, Algorithm 2)."""
  FLAG_PREFIX = 'adam_'
  beta1: float = options_lib.option(0.9, 'FedAdam server beta1, in [0, 1).')
  beta2: float = options_lib.option(0.99, 'FedAdam server beta2, in [0, 1).')
  epsilon: float = options_lib.option(
      1e-3, 'FedAdam tau (adaptivity) > 0 (Reddi et al. 2021: 1e-3).')

  def __post_init__(self):
    for name in ('beta1', 'beta2'):
      options_lib.require(self, name, 0 <= getattr(self, name) < 1,
                          'in [0, 1)')
    options_lib.require(self, 'epsilon', self.epsilon > 0, '> 0')


@dataclasses.dataclass(frozen=True)
class FedProxOptions:
  """FedProx's proximal strength (Li et al. 2020, eq. 2)."""
  FLAG_PREFIX = 'fedprox_'
  mu: float = options_lib.option(0.01, 'FedProx proximal strength mu.')

  def __post_init__(self):
    options_lib.require(self, 'mu', self.mu >= 0, '>= 0')


def build_tff_fedavg(
    model_spec: spec_lib.ModelOrFactory,
    client_optimizer: tff.learning.optimizers.Optimizer,
    server_optimizer: tff.learning.optimizers.Optimizer,
    keras_loss_fn=None,
) -> tff.learning.templates.LearningProcess:
  """TFF's weighted FedAvg with a chosen server optimizer.

  Round t: each sampled client k starts from w^t, runs local epochs of
  `client_optimizer` on its data and returns Delta_k = w^t - w_k; the server
  forms Delta = sum_k n_k Delta_k / sum_k n_k (weighted by example counts) and
  applies it as a pseudo-gradient with `server_optimizer`:
  w^{t+1} = ServerOpt(w^t, Delta). SGD with learning rate 1 recovers FedAvg
  (McMahan et al. 2017, Algorithm 1); SGD with momentum is FedAvgM (Hsu et
  al. 2019); Adam is FedAdam (Reddi et al. 2021, Algorithm 2).

  Args:
    model_spec: the model.
      A `ModelSpec`, or a no-argument Keras model factory whose last layer
      is a Dense `classifier` (`spec_lib.as_model_spec`).
    client_optimizer: local optimizer (e.g. `build_sgdm(learning_rate)`).
    server_optimizer: server optimizer applied to the averaged delta.
    keras_loss_fn: optional no-arg callable returning a Keras loss on logits
      (default sparse categorical cross-entropy).

  Returns:
    A `tff.learning.templates.LearningProcess`.
  """
  model_spec = spec_lib.as_model_spec(model_spec)
  return tff.learning.algorithms.build_weighted_fed_avg(
      model_spec.tff_model_fn(keras_loss_fn),
      client_optimizer_fn=client_optimizer,
      server_optimizer_fn=server_optimizer,
      # Iterating the dataset inside the tf.function is ~1.7x faster on CPU
      # than TFF's default dataset.reduce loop (DESIGN.md).
      loop_implementation=tff.learning.LoopImplementation.DATASET_ITERATOR)


def build_local_training_process(
    model_spec: spec_lib.ModelOrFactory,
    client_optimizer: tff.learning.optimizers.Optimizer,
    server_optimizer: tff.learning.optimizers.Optimizer,
    *,
    loss: losses.PerExampleLoss = losses.cross_entropy,
    proximal_strength: float = 0.0,
    plugin: Optional[local_training.LocalLoopPlugin] = None,
    validation_slots: Optional[int] = None,
) -> tff.learning.templates.LearningProcess:
  """A FedAvg-shaped process around our shared local-training client work.

  The same math as `build_tff_fedavg` (example-weighted mean of client deltas,
  applied by `server_optimizer`), with the local objective open to a custom
  per-example loss, a proximal term and a plug-in's broadcast state, client
  reports and hooks. Every custom algorithm of this project is one call of this
  function with its own pieces.

  Args:
    model_spec: the model.
      A `ModelSpec`, or a no-argument Keras model factory whose last layer
      is a Dense `classifier` (`spec_lib.as_model_spec`).
    client_optimizer: local optimizer.
    server_optimizer: server optimizer applied to the averaged delta.
    loss: per-example loss (see `losses`).
    proximal_strength: FedProx's mu (0 for none).
    plugin: the method's additions to the local loop (None for none).
    validation_slots: cohort size K when clients report per-slot validation
      losses (see `local_training`); None otherwise.

  Returns:
    A `tff.learning.templates.LearningProcess`.
  """
  model_spec = spec_lib.as_model_spec(model_spec)
  initial_weights = model_spec.initial_weights_computation()
  weights_type = initial_weights.type_signature.result
  client_work = local_training.build_local_training_client_work(
      model_spec, client_optimizer, loss=loss,
      proximal_strength=proximal_strength, plugin=plugin,
      validation_slots=validation_slots)
  return tff.learning.templates.compose_learning_process(
      initial_weights,
      tff.learning.templates.build_broadcast_process(weights_type),
      client_work,
      tff.aggregators.MeanFactory().create(
          weights_type.trainable, tff.TensorType(np.float32)),
      tff.learning.templates.build_apply_optimizer_finalizer(
          server_optimizer, weights_type))


def build_fedprox(
    model_spec: spec_lib.ModelOrFactory,
    client_optimizer: tff.learning.optimizers.Optimizer,
    server_optimizer: tff.learning.optimizers.Optimizer,
    proximal_strength: float,
    loss: losses.PerExampleLoss = losses.cross_entropy,
) -> tff.learning.templates.LearningProcess:
  """FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks").

  Client k approximately minimises h_k(w; w^t) = F_k(w) + (mu/2)||w - w^t||^2
  (their eq. 2) by local SGD, i.e. every local gradient is
  grad F_k(w) + mu (w - w^t); the server averages deltas as FedAvg. A larger mu
  keeps clients closer to w^t (tested: the global update norm shrinks with mu).

  Args:
    model_spec: the model.
      A `ModelSpec`, or a no-argument Keras model factory whose last layer
      is a Dense `classifier` (`spec_lib.as_model_spec`).
    client_optimizer: local optimizer.
    server_optimizer: server optimizer.
    proximal_strength: mu >= 0 (BalanceFL uses 0.05, RedGrape 0.1, CReFF 0.01).
    loss: per-example loss.

  Returns:
    A `tff.learning.templates.LearningProcess`.
  """
  model_spec = spec_lib.as_model_spec(model_spec)
  return build_local_training_process(
      model_spec, client_optimizer, server_optimizer, loss=loss,
      proximal_strength=proximal_strength)


def _fedavg_with_server(model_spec, config, server_optimizer, context,
                        proximal_strength=0.0):
  """FedAvg's round with a chosen server optimizer, on our client work.

  The same arithmetic as TFF's `build_weighted_fed_avg` (tested equal in
  tests/test_learning.py), at the plain-TF floor's speed per round
  (results/speed.md), with the flagged per-example loss. With --loss=mfe or
  msfe the local loop also carries the minority classes (`learning.mfe`):
  each client's own (--mfe_minority=local), or the composition monitor's
  estimate broadcast with the model (global; the process then runs the
  monitor on the server's auxiliary data).
  """
  model_spec = spec_lib.as_model_spec(model_spec)
  plugin = None
  if config.uses_minority:
    plugin = (mfe.local_minority_plugin(model_spec.num_classes,
                                        config.mfe_minority_share)
              if config.mfe_minority == 'local' else
              mfe.broadcast_minority_plugin(model_spec.num_classes))
  process = build_local_training_process(
      model_spec, config.client_optimizer(), server_optimizer,
      loss=config.per_example_loss(), proximal_strength=proximal_strength,
      plugin=plugin)
  if config.loss_runs_monitor:
    process = mfe.build_global_minority(
        process, model_spec, context.aux_data, config.client_optimizer(),
        local_epochs=config.local_epochs, batch_size=config.batch_size,
        share=config.mfe_minority_share, threshold=config.ratio_threshold)
  return process


def _fedavg(model_spec, config, options, context):
  del options  # FedAvg has none.
  return _fedavg_with_server(model_spec, config, config.server_sgd(), context)


def _fedavgm(model_spec, config, options, context):
  return _fedavg_with_server(model_spec, config,
                             config.server_sgd(momentum=options.momentum),
                             context)


def _fedadam(model_spec, config, options, context):
  server = tff.learning.optimizers.build_adam(
      learning_rate=config.server_lr_or(0.01), beta_1=options.beta1,
      beta_2=options.beta2, epsilon=options.epsilon)
  return _fedavg_with_server(model_spec, config, server, context)


def _fedprox(model_spec, config, options, context):
  return _fedavg_with_server(model_spec, config, config.server_sgd(), context,
                             proximal_strength=options.mu)


FEDAVG = method.Method('fedavg', _fedavg, minority_losses=True)
FEDAVGM = method.Method('fedavgm', _fedavgm, FedAvgMOptions,
                        minority_losses=True)
FEDADAM = method.Method('fedadam', _fedadam, FedAdamOptions,
                        minority_losses=True)
FEDPROX = method.Method('fedprox', _fedprox, FedProxOptions,
                        minority_losses=True)
