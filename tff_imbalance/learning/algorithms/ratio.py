"""Ratio Loss with the composition monitor (Wang et al., AAAI 2021; seeds/002).

The server holds a small auxiliary set (a few examples per class, held out of
every client). Each round its monitor (`learning.monitor`) trains the
received global model on each class's auxiliary examples, derives the class
ratios Ra_i (eq. 7) and, after the round, estimates the round's class
composition (eq. 8). Ratio Loss turns the ratios into class weights that the
server broadcasts with the model, as process state.
"""

import collections
import dataclasses

import numpy as np
import tensorflow as tf

from tff_imbalance import compat
from tff_imbalance import errors
from tff_imbalance import losses
from tff_imbalance.data import arrays
from tff_imbalance.learning import method
from tff_imbalance.learning import monitor
from tff_imbalance.learning import options as options_lib
from tff_imbalance.learning.algorithms import fedavg_family
from tff_imbalance.learning.client_work import local_training
from tff_imbalance.models import spec as spec_lib

tff = compat.tff

# How eq. 10's class weights are scaled (see `build_ratio_loss`).
RATIO_NORMALIZATIONS = ('mean', 'none')


@dataclasses.dataclass(frozen=True)
class RatioOptions:
  """Ratio Loss's hyperparameters (002 eq. 10, Table 1); the monitor's
  threshold T_Ra is shared with --monitor (`AlgorithmConfig`)."""
  FLAG_PREFIX = 'ratio_'
  alpha: float = options_lib.option(1.0, 'Ratio Loss alpha (002 eq. 10), > 0.')
  beta: float = options_lib.option(0.1, 'Ratio Loss beta (002 eq. 10), >= 0.')
  start_round: int = options_lib.option(
      1, 'First round (1-based) with Ratio Loss weights; plain CE before '
      '(002 Table 1, detection stage).')
  weighting: str = options_lib.option(
      'per_example', 'per_example: each example weighted by its class (002 '
      'eq. 11); as_coded: the reference code\'s batch-mean weight times CE '
      '(NOTES.md sec. 2).', choices=losses.RATIO_WEIGHTINGS)
  normalize: str = options_lib.option(
      'mean', 'mean: Ratio Loss class weights alpha + beta Ra_i divided by '
      'their class mean (finite under client momentum); none: 002 eq. 10 as '
      'printed.', choices=RATIO_NORMALIZATIONS)

  def __post_init__(self):
    options_lib.require(self, 'alpha', self.alpha > 0, '> 0')
    options_lib.require(self, 'beta', self.beta >= 0, '>= 0')
    options_lib.require(self, 'start_round', self.start_round >= 1, '>= 1',
                        '1 re-weights from the first round')
    options_lib.check_choices(self)


def build_ratio_loss(
    model_spec: spec_lib.ModelOrFactory,
    client_optimizer: tff.learning.optimizers.Optimizer,
    server_optimizer: tff.learning.optimizers.Optimizer,
    aux: arrays.LabeledArrays,
    *,
    local_epochs: int,
    batch_size: int,
    alpha: float = 1.0,
    beta: float = 0.1,
    threshold: float = monitor.DEFAULT_THRESHOLD,
    start_round: int = 1,
    weighting: str = 'per_example',
    normalize: str = 'mean',
) -> tff.learning.templates.LearningProcess:
  """FedAvg with Ratio Loss and the composition monitor (002 secs 3.2-3.3).

  Round t: the monitor trains the received global model G_t on each class's
  auxiliary examples and computes Ra_i (eq. 7, components filtered with
  T_Ra = `threshold`). From round `start_round` on (the detection stage of
  Table 1; 1 = from the start) the class weights pi_i = alpha + beta Ra_i
  (eq. 10) are broadcast with G_t, with `normalize='mean'` divided by
  their mean over the C classes,
    pi_i = (alpha + beta Ra_i) / ((1/C) sum_j (alpha + beta Ra_j)),
  and every client minimises
  (1/B) sum_b pi_{y_b} CE(x_b, y_b) (eq. 11: each example weighted by its own
  class; `weighting='as_coded'` uses the reference code's
  mean_b(pi_{y_b}) * mean_b CE instead). Before `start_round` all weights are
  1 (plain CE). The server averages the deltas as FedAvg (weighted by
  examples) and applies `server_optimizer`; the monitor then estimates the
  round's composition from G_t+1 - G_t (eq. 8) and releases it with its
  cosine similarity to the truth.

  Args:
    model_spec: the model.
      A `ModelSpec`, or a no-argument Keras model factory whose last layer
      is a Dense `classifier` (`spec_lib.as_model_spec`).
    client_optimizer: local optimizer (also replayed on the auxiliary data).
    server_optimizer: server optimizer.
    aux: the server's auxiliary examples, every class present.
    local_epochs: the clients' local epochs (the monitor replays them).
    batch_size: the clients' batch size (the monitor replays it).
    alpha: alpha of eq. 10 (> 0; the paper's 1.0, supplement table 4).
    beta: beta of eq. 10 (>= 0; the paper's 0.1, supplement table 5).
    threshold: T_Ra (the paper's 1.25).
    start_round: the first round (1-based) with Ratio Loss weights.
    weighting: 'per_example' (the paper) or 'as_coded' (reference code).
    normalize: 'mean' (ours, the default) or 'none' (eq. 10 as printed).
      Eq. 10's weights grow with Ra without bound: under client momentum
      0.9 a diverging model saturates every Ra at the cap (weights 501),
      which scales the loss 501-fold and diverges further. Weights of mean
      1 keep the loss's scale, the classes' order and their ratios (pi_i /
      pi_j is eq. 10's), and turn all-saturated ratios into plain CE.

  Raises:
    errors.UserInputError: for another `normalize`.

  Returns:
    A `tff.learning.templates.LearningProcess` whose state is
    `OrderedDict(inner, round)`; the class weights used in the latest round
    are `inner.client_work['broadcast']`.
  """
  model_spec = spec_lib.as_model_spec(model_spec)
  if normalize not in RATIO_NORMALIZATIONS:
    raise errors.UserInputError(
        f'normalize (--ratio_normalize) must be one of '
        f'{", ".join(RATIO_NORMALIZATIONS)} (got {normalize!r}).')
  loss = losses.ratio_loss(weighting)
  num_classes = model_spec.num_classes
  plugin = local_training.LocalLoopPlugin(
      initial_broadcast=lambda: np.ones([num_classes], np.float32))
  inner = fedavg_family.build_local_training_process(
      model_spec, client_optimizer, server_optimizer, loss=loss,
      plugin=plugin)
  inner_state_type = inner.initialize.type_signature.result.member

  @compat.tf_computation(inner_state_type,
                         tff.TensorType(np.float32, [num_classes]), np.int32)
  def set_class_weights(state, ratios, round_num):
    class_weights = alpha + beta * ratios
    if normalize == 'mean':
      class_weights /= tf.reduce_mean(class_weights)
    class_weights = tf.where(round_num >= start_round, class_weights,
                             tf.ones_like(ratios))
    return local_training.with_broadcast(state, class_weights)

  return monitor.build_monitored_process(
      inner, model_spec, aux, client_optimizer, local_epochs=local_epochs,
      batch_size=batch_size, threshold=threshold,
      before_round=set_class_weights)


def build_monitored(process: tff.learning.templates.LearningProcess,
                    model_spec: spec_lib.ModelOrFactory,
                    client_optimizer: tff.learning.optimizers.Optimizer,
                    aux: arrays.LabeledArrays | None, *, local_epochs: int,
                    batch_size: int,
                    threshold: float = monitor.DEFAULT_THRESHOLD
                   ) -> tff.learning.templates.LearningProcess:
  """Any algorithm's process with the monitor as a pure diagnostic (--monitor).

  Works on TFF's own processes too (`build_tff_fedavg`,
  `tff.learning.algorithms.build_weighted_fed_avg`): the monitor counts the
  true composition from the clients' datasets itself, and needs of the
  inner process only its `client_work.train.num_examples` measurement.

  Args:
    process: the process to watch.
    model_spec: its model: a `ModelSpec`, or a no-argument Keras model
      factory whose last layer is a Dense `classifier`
      (`spec_lib.as_model_spec`).
    client_optimizer: the clients' local optimizer (replayed on `aux`).
    aux: the server's auxiliary examples, every class present.
    local_epochs: the clients' local epochs.
    batch_size: the clients' batch size.
    threshold: T_Ra of eq. 7's filter.

  Returns:
    The monitored process (see `monitor.build_monitored_process`).

  Raises:
    errors.UserInputError: without auxiliary data.
  """
  model_spec = spec_lib.as_model_spec(model_spec)
  monitor.check_aux_data(aux, 'monitor=True (--monitor)')
  return monitor.build_monitored_process(
      process, model_spec, aux, client_optimizer, local_epochs=local_epochs,
      batch_size=batch_size, threshold=threshold)


def _build(model_spec, config, options, context):
  """Ratio Loss with the composition monitor (002 secs 3.2-3.3)."""
  monitor.check_aux_data(context.aux_data, "algo='ratio' (--algo=ratio)")
  return build_ratio_loss(
      model_spec, config.client_optimizer(), config.server_sgd(),
      context.aux_data, local_epochs=config.local_epochs,
      batch_size=config.batch_size, alpha=options.alpha, beta=options.beta,
      threshold=config.ratio_threshold, start_round=options.start_round,
      weighting=options.weighting, normalize=options.normalize)


RATIO = method.Method('ratio', _build, RatioOptions,
                      local_loss=method.LocalLoss.OWN, runs_monitor=True)
