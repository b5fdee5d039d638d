"""What an algorithm needs to know about the model, and nothing about the data.

A `ModelSpec` builds a fresh Keras model on every call (TFF traces model
construction inside each computation; a captured model fails with an
EagerTensor error) and knows the batch structure the model consumes.

Our architectures are `ModelSpec(name, input_shape, num_classes, seed)`. A
user's own Keras model enters as a no-argument factory:

  spec = ModelSpec.from_keras(lambda: my_keras_model(), classifier_layer='head')

which builds the model once to read its input shape and its number of
classes (the units of its last layer, a `Dense` without activation named
`classifier` unless `classifier_layer` names it otherwise). Every public
`build_*` of `learning.algorithms` takes either form (`as_model_spec`).
"""

import collections
import dataclasses
import numbers
from typing import Callable, Union

import tensorflow as tf

from tff_imbalance import compat
from tff_imbalance import errors
from tff_imbalance.models import builders

tff = compat.tff

# A no-argument function returning a fresh (uncompiled) Keras model.
KerasModelFactory = Callable[[], tf.keras.Model]


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

  @classmethod
  def from_keras(cls, model_fn: KerasModelFactory, *,
                 classifier_layer: str = builders.CLASSIFIER_LAYER,
                 seed: int = 0) -> 'KerasModelSpec':
    """A spec of a user's own Keras model (see `KerasModelSpec`).

    Args:
      model_fn: a no-argument function returning a fresh `tf.keras.Model`
        with one known input shape whose last layer is a `Dense` layer
        without activation (logits) named `classifier_layer`. Seed its
        initializers for repeatable runs.
      classifier_layer: the name of that last layer.
      seed: the run's seed for methods that draw their own randomness
        (BalanceFL, CReFF); the model's initial weights are `model_fn`'s.

    Returns:
      A `KerasModelSpec` whose `input_shape` and `num_classes` are read from
      one built model.

    Raises:
      errors.UserInputError: if `model_fn` does not build such a model.
    """
    model = _built_user_model(model_fn)
    head = builders.check_classifier_head(model, classifier_layer)
    return KerasModelSpec(
        name=model.name, input_shape=_input_shape(model),
        num_classes=int(head.units), seed=seed, model_fn=model_fn,
        classifier_layer=classifier_layer)

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


@dataclasses.dataclass(frozen=True)
class KerasModelSpec(ModelSpec):
  """A user's Keras model factory as a `ModelSpec` (`ModelSpec.from_keras`).

  `build_keras` calls the factory, never `builders.MODEL_BUILDERS`: a user's
  model named 'mlp' stays the user's. `name` is the model's own name, a
  label only.

  Attributes:
    model_fn: the no-argument factory.
    classifier_layer: the name of the model's final `Dense` layer.
  """
  model_fn: KerasModelFactory
  classifier_layer: str = builders.CLASSIFIER_LAYER

  def build_keras(self) -> tf.keras.Model:
    """A fresh model from the factory, its head marked for `builders`."""
    model = self.model_fn()
    builders.check_classifier_head(model, self.classifier_layer)
    return builders.mark_classifier(model, self.classifier_layer)


def _built_user_model(model_fn: KerasModelFactory) -> tf.keras.Model:
  if isinstance(model_fn, tf.keras.Model):
    raise errors.UserInputError(
        f'model: pass a no-argument function that builds the Keras model '
        f'(e.g. lambda: build_my_model()), not the model {model_fn.name!r} '
        'itself: TFF builds a fresh one inside every computation.')
  if not callable(model_fn):
    raise errors.UserInputError(
        f'model must be a ModelSpec or a no-argument function returning a '
        f'tf.keras.Model (got {type(model_fn).__name__}).')
  model = model_fn()
  if not isinstance(model, tf.keras.Model):
    raise errors.UserInputError(
        f'model: the factory must return a tf.keras.Model (got '
        f'{type(model).__name__}).')
  return model


def _input_shape(model: tf.keras.Model) -> tuple[int, ...]:
  """The shape of one example, from a model with one fully known input."""
  shape = None
  if len(model.inputs or ()) == 1:
    shape = tuple(model.inputs[0].shape[1:])
  if not shape or not all(isinstance(d, numbers.Integral) for d in shape):
    raise errors.UserInputError(
        f'model: the model {model.name!r} must take one input of known '
        f'shape (got {None if shape is None else shape}); start it with '
        'tf.keras.Input(shape=...).')
  return tuple(int(d) for d in shape)


# What every public `build_*` takes as its model.
ModelOrFactory = Union[ModelSpec, KerasModelFactory]


def as_model_spec(model: ModelOrFactory, *,
                  classifier_layer: str = builders.CLASSIFIER_LAYER,
                  seed: int = 0) -> ModelSpec:
  """The one normalisation every public `build_*` applies to its model.

  Args:
    model: a `ModelSpec` (returned as it is), or a no-argument Keras model
      factory (see `ModelSpec.from_keras`).
    classifier_layer: for a factory, the name of the model's last layer.
    seed: for a factory, the seed of the methods' own random draws.

  Returns:
    A `ModelSpec`.

  Raises:
    errors.UserInputError: for anything else, or a factory whose model does
      not end in a `Dense` classifier (see `ModelSpec.from_keras`).
  """
  if isinstance(model, ModelSpec):
    return model
  return ModelSpec.from_keras(model, classifier_layer=classifier_layer,
                              seed=seed)
