"""A method added from outside the package: FedAvg with label smoothing
(docs/ARCHITECTURE.md, "Adding a method"; tests/test_adding_a_method.py)."""

import dataclasses

import tensorflow as tf

from tff_imbalance.learning import method
from tff_imbalance.learning import options as options_lib
from tff_imbalance.learning.algorithms import fedavg_family


@dataclasses.dataclass(frozen=True)
class LabelSmoothingOptions:
  """The smoothing epsilon; its flag is `--label_smoothing`."""
  FLAG_PREFIX = 'label_'
  smoothing: float = options_lib.option(
      0.1, 'label_smoothing: share of each target spread over all classes.')

  def __post_init__(self):
    options_lib.require(self, 'smoothing', 0 <= self.smoothing < 1,
                        'in [0, 1)')


def smoothed_cross_entropy(smoothing: float):
  """Per-example -sum_c q_c log p_c, q = (1 - eps) onehot(y) + eps / C."""
  def loss(labels, logits, broadcast=()):
    del broadcast  # No server state.
    num_classes = logits.shape[-1]
    targets = tf.one_hot(labels, num_classes) * (1 - smoothing) + (
        smoothing / num_classes)
    return tf.nn.softmax_cross_entropy_with_logits(targets, logits)
  return loss


def build_label_smoothing(model_spec, client_optimizer, server_optimizer, *,
                          smoothing: float = 0.1):
  """FedAvg whose clients minimise label-smoothed cross-entropy.

  Client k minimises mean_i -sum_c q_ic log softmax(z(x_i))_c with
  q_i = (1 - eps) onehot(y_i) + eps / C (Szegedy et al. 2016, sec. 7); the
  server averages the deltas as FedAvg.
  """
  return fedavg_family.build_local_training_process(
      model_spec, client_optimizer, server_optimizer,
      loss=smoothed_cross_entropy(smoothing))


def _build(model_spec, config, options, context):
  del context  # Needs nothing the task knows about its data.
  return build_label_smoothing(model_spec, config.client_optimizer(),
                               config.server_sgd(), smoothing=options.smoothing)


LABEL_SMOOTHING = method.Method('label_smoothing', _build,
                                LabelSmoothingOptions,
                                local_loss=method.LocalLoss.OWN)
