"""What an algorithm needs to know about the model, and nothing about the data.

A `ModelSpec` builds a fresh Keras model on every call (TFF traces model
construction inside each computation; a captured model fails with an
EagerTensor error) and knows the batch structure the model consumes.
"""

import collections
import dataclasses

import tensorflow as tf

from tff_imbalance import compat
from tff_imbalance.models import builders

tff = compat.tff


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A seeded model architecture for C-way classification of fixed-shape inputs.

  Attributes:
    name: key of `builders.MODEL_BUILDERS` ('cnn', 'cnn_dropout', 'mlp').
    input_shape: shape of one example, e.g. (28, 28, 1).
    num_classes: number of classes C (logits per example).
    seed: initialisation seed; every build gives the same initial weights.
  """
  name: str
  input_shape: tuple[int, ...]
  num_classes: int
  seed: int

  def build_keras(self) -> tf.keras.Model:
    """A fresh Keras model mapping inputs [B, *input_shape] to logits [B, C]."""
    return builders.build_model(self.name, self.input_shape, self.num_classes,
                                self.seed)

  @property
  def batch_spec(self) -> collections.OrderedDict:
    """The element spec of every client dataset: OrderedDict(x, y)."""
    return collections.OrderedDict(
        x=tf.TensorSpec([None, *self.input_shape], tf.float32),
        y=tf.TensorSpec([None], tf.int64))

  def weights_type(self):
    """TFF type of `tff.learning.models.ModelWeights` for this model."""
    return self.initial_weights_computation().type_signature.result

  def initial_weights_computation(self):
    """A no-arg TFF computation returning the seeded initial ModelWeights."""

    @compat.tf_computation
    def initial_weights():
      return tff.learning.models.ModelWeights.from_model(self.build_keras())

    return initial_weights

  def tff_model_fn(self, loss_fn=None):
    """A no-arg `VariableModel` factory for TFF's own builders.

    Args:
      loss_fn: a no-arg callable returning a Keras loss on logits; defaults to
        sparse categorical cross-entropy.

    Returns:
      A callable that builds a fresh `tff.learning.models.VariableModel`.
    """
    if loss_fn is None:
      loss_fn = lambda: tf.keras.losses.SparseCategoricalCrossentropy(  # pylint: disable=g-long-lambda
          from_logits=True)

    def model_fn():
      return tff.learning.models.from_keras_model(
          self.build_keras(),
          loss=loss_fn(),
          input_spec=self.batch_spec,
          metrics=[tf.keras.metrics.SparseCategoricalAccuracy()])

    return model_fn
