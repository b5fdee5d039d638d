"""Balanced Softmax on FedAvg, with a local or a global class prior.

Ren et al., "Balanced Meta-Softmax for Long-Tailed Visual Recognition"
(NeurIPS 2020, eq. 4): train on softmax(z + log pi) so that the plain logits
z estimate the class-balanced posterior. Two priors, as the seed papers'
baselines use it (NOTES.md secs. 3 and 7):

* local: pi = the client's own label counts, zero counts replaced by 1
  (FedETF's `balanced_softmax_loss`); counted inside the client computation
  from the data it trains on;
* global: pi = the training counts of the whole population (BalanceFL's
  centralized `PriorCELoss`, here sent to every client as a constant).
"""

import dataclasses

import numpy as np
import tensorflow as tf

from tff_imbalance import compat
from tff_imbalance import errors
from tff_imbalance import losses
from tff_imbalance.learning import method
from tff_imbalance.learning import options as options_lib
from tff_imbalance.learning.algorithms import fedavg_family
from tff_imbalance.learning.client_work import local_training
from tff_imbalance.models import spec as spec_lib

tff = compat.tff

PRIORS = ('local', 'global')


@dataclasses.dataclass(frozen=True)
class BalancedSoftmaxOptions:
  """Balanced Softmax's prior (Ren et al. 2020)."""
  FLAG_PREFIX = 'balanced_softmax_'
  prior: str = options_lib.option(
      'local', 'balanced_softmax: log prior from each client\'s own label '
      'counts (FedETF) or from the global training counts (BalanceFL\'s '
      'centralized baseline).', choices=PRIORS)

  def __post_init__(self):
    options_lib.check_choices(self)


def local_log_prior(dataset: tf.data.Dataset, num_classes: int,
                    local_epochs: int) -> tf.Tensor:
  """log n_c of one client's data, zero counts replaced by 1.

  The client's dataset repeats its examples `local_epochs` times, so the
  counts over it are divided by that to get one pass's n_c (this matters
  only for the zero-count classes, whose replacement 1 is not rescaled).
  """
  counts = tf.zeros([num_classes], tf.float32)
  for batch in iter(dataset):
    counts += tf.reduce_sum(
        tf.one_hot(batch['y'], num_classes, dtype=tf.float32), axis=0)
  return losses.log_prior(counts / float(local_epochs))


def build_balanced_softmax(
    model_spec: spec_lib.ModelOrFactory,
    client_optimizer: tff.learning.optimizers.Optimizer,
    server_optimizer: tff.learning.optimizers.Optimizer,
    *,
    prior: str = 'local',
    train_class_counts: np.ndarray | None = None,
    local_epochs: int = 1,
) -> tff.learning.templates.LearningProcess:
  """FedAvg whose clients minimise the Balanced Softmax loss.

  Each client k minimises mean_i -log softmax(z(x_i) + log pi)_{y_i} (Ren et
  al. 2020, eq. 4) by local SGD, with log pi = `losses.log_prior` of its own
  label counts n_{k,c} (prior='local') or of the population's training
  counts n_c (prior='global'); the server averages the deltas as FedAvg.

  Args:
    model_spec: the model.
      A `ModelSpec`, or a no-argument Keras model factory whose last layer
      is a Dense `classifier` (`spec_lib.as_model_spec`).
    client_optimizer: local optimizer.
    server_optimizer: server optimizer.
    prior: 'local' or 'global'.
    train_class_counts: [C] population training counts (prior='global').
    local_epochs: how many times each client's dataset repeats its examples
      (prior='local' counts one pass).

  Returns:
    A `tff.learning.templates.LearningProcess`.

  Raises:
    errors.UserInputError: for an unknown prior.
    ValueError: for prior='global' without counts of C classes.
  """
  model_spec = spec_lib.as_model_spec(model_spec)
  num_classes = model_spec.num_classes
  if prior not in PRIORS:
    raise errors.UserInputError(
        f'prior (--balanced_softmax_prior) must be one of '
        f'{", ".join(PRIORS)} (got {prior!r}).')
  if prior == 'global':
    counts = np.asarray(train_class_counts, np.float32)
    if counts.shape != (num_classes,):
      raise ValueError(f'the global prior needs {num_classes} class counts, '
                       f'got shape {counts.shape}')
    global_log_prior = losses.log_prior(counts).numpy()
    plugin = local_training.LocalLoopPlugin(
        initial_broadcast=lambda: global_log_prior)
  else:
    plugin = local_training.LocalLoopPlugin(
        # Placeholder server state of the prior's shape; each client replaces
        # it with its own log prior before training.
        initial_broadcast=lambda: np.zeros([num_classes], np.float32),
        prepare=lambda client: local_training.Preparation(
            context=local_log_prior(client.train, num_classes,
                                    local_epochs)))
  return fedavg_family.build_local_training_process(
      model_spec, client_optimizer, server_optimizer,
      loss=losses.balanced_softmax, plugin=plugin)


def _build(model_spec, config, options, context):
  """Balanced Softmax (Ren et al. 2020) on FedAvg, local or global prior."""
  return build_balanced_softmax(
      model_spec, config.client_optimizer(), config.server_sgd(),
      prior=options.prior, train_class_counts=context.train_class_counts,
      local_epochs=config.local_epochs)


BALANCED_SOFTMAX = method.Method('balanced_softmax', _build,
                                 BalancedSoftmaxOptions,
                                 local_loss=method.LocalLoss.OWN)
