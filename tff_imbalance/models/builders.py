"""Seeded Keras models for image classification, split into features + head.

Every builder returns a functional `tf.keras.Model` mapping float32 images
[B, H, W, C_in] to LOGITS [B, num_classes] (no softmax: losses take
`from_logits=True`). The last layer is a `tf.keras.layers.Dense` named
`CLASSIFIER_LAYER`; everything before it is the feature extractor, so

  logits = feature_extractor(model)(x) @ W + b,  (W, b) = classifier weights.

Algorithms that work on features and classifier separately (RedGrape's
per-class classifier gradients, BalanceFL's feature augmentation, CReFF's
classifier re-training on federated features) use `feature_extractor`,
`classifier_layer` and `feature_dim` instead of indexing layers. A user's own
model (`spec.ModelSpec.from_keras`) must end the same way: a `Dense` layer
without activation, named `classifier` or any name recorded with
`mark_classifier` (checked by `check_classifier_head`).

Initialisation: Glorot-normal kernels and zero biases, as in
google-research/federated `utils/models/emnist_models.py`, except that each
layer's initializer (and each dropout layer) gets its own seed `seed + i` for
the layer's position i. The reference reuses one seed for every layer, which
gives same-shaped kernels identical draws; distinct seeds avoid that while
keeping two builds with the same `seed` bit-identical.

Dropout (`build_conv_dropout_cnn`) is `BatchSeededDropout`: its mask is a
stateless draw seeded by (the layer's seed, a fingerprint of the batch's
input images), so it repeats bit for bit in every run, on every worker and
in every concurrent client, without any random-op state.
"""

from collections.abc import Callable, Sequence
import numbers

import tensorflow as tf

from tff_imbalance import errors

CLASSIFIER_LAYER = 'classifier'
# Where `mark_classifier` records a user's other name for the classifier.
_CLASSIFIER_NAME_ATTRIBUTE = '_tff_imbalance_classifier_name'

ModelBuilder = Callable[[Sequence[int], int, int], tf.keras.Model]


def _check_common_args(input_shape: Sequence[int], num_classes: int,
                       seed: int, image_input: bool) -> tuple[int, ...]:
  """Validates the arguments every builder takes; returns the input shape.

  Args:
    input_shape: shape of one example, without the batch dimension.
    num_classes: number of output logits.
    seed: base seed for the layers' initializers.
    image_input: whether the model needs [H, W, channels] inputs.

  Returns:
    `input_shape` as a tuple of Python ints.

  Raises:
    errors.UserInputError: if an argument is out of range.
  """
  shape = tuple(input_shape)
  if (not shape or
      not all(isinstance(d, numbers.Integral) and d > 0 for d in shape)):
    raise errors.UserInputError(
        f'input_shape must be a non-empty sequence of positive ints (got '
        f'{input_shape!r}); pass the shape of one example, e.g. (28, 28, 1).')
  if image_input and len(shape) != 3:
    raise errors.UserInputError(
        f'input_shape must be (height, width, channels) for a convolutional '
        f'model (got {input_shape!r}); add a channel axis, e.g. (28, 28, 1).')
  if (not isinstance(num_classes, numbers.Integral) or
      isinstance(num_classes, bool) or num_classes < 2):
    raise errors.UserInputError(
        f'num_classes must be an int >= 2 (got {num_classes!r}).')
  if (not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or
      seed < 0):
    raise errors.UserInputError(
        f'seed must be a non-negative int (got {seed!r}); models are always '
        f'seeded so that runs are reproducible.')
  return tuple(int(d) for d in shape)


def _kernel_init(seed: int) -> tf.keras.initializers.Initializer:
  return tf.keras.initializers.GlorotNormal(seed=seed)


class BatchSeededDropout(tf.keras.layers.Dropout):
  """Dropout whose mask is a pure function of (layer seed, batch images).

  Called on `[activations, images]`, where `images` is the model's input
  batch. In training, each unit is kept with probability 1 - rate and scaled
  by 1 / (1 - rate), as Keras `Dropout`; the mask is
  `tf.nn.experimental.stateless_dropout` seeded by
  `[seed, fingerprint64(images)]`. Keras's own `Dropout` draws from stateful
  random ops whose state is shared by every call of the layer and by the
  clients a TFF worker trains concurrently, so which mask a step got depended
  on thread timing. A client's batches are a pure function of
  (run seed, round, client, step) (`data/federated.py`), so the masks are
  too, and they differ from step to step and layer to layer; only two
  identical image batches get the same mask. The layer has no weights: the
  model's `ModelWeights` are those of a model with Keras `Dropout`.
  """

  def call(self, inputs, training=None):
    activations, images = inputs
    if training is None:
      training = tf.keras.backend.learning_phase()

    def dropped():
      # tf.fingerprint is Farmhash Fingerprint64, stable across platforms.
      fingerprint = tf.bitcast(
          tf.fingerprint(tf.reshape(images, [1, -1])), tf.int64)
      seed = tf.concat([tf.constant([self.seed], tf.int64), fingerprint], 0)
      return tf.nn.experimental.stateless_dropout(activations, self.rate, seed)

    return tf.__internal__.smart_cond.smart_cond(
        training, dropped, lambda: tf.identity(activations))

  def compute_output_shape(self, input_shape):
    return input_shape[0]


def _classifier(num_classes: int, seed: int) -> tf.keras.layers.Dense:
  """The linear head every builder ends with (no activation: logits)."""
  return tf.keras.layers.Dense(
      num_classes, kernel_initializer=_kernel_init(seed),
      name=CLASSIFIER_LAYER)


def build_mcmahan_cnn(input_shape: Sequence[int], num_classes: int,
                      seed: int) -> tf.keras.Model:
  """The CNN of McMahan et al. 2017 (FedAvg), returning logits.

  conv5x5-32 'same' relu -> maxpool 2x2 'same' -> conv5x5-64 'same' relu ->
  maxpool 2x2 'same' -> flatten -> dense-512 relu -> dense-C (`classifier`),
  as google-research/federated `create_original_fedavg_cnn_model`
  (https://arxiv.org/abs/1602.05629). For 28x28x1 inputs and 10 classes it
  has 1,663,370 parameters; features are 512-dimensional.

  Args:
    input_shape: (height, width, channels) of one image.
    num_classes: number of logits C.
    seed: base seed; layer i is initialised with seed + i.

  Returns:
    An uncompiled functional `tf.keras.Model`.

  Raises:
    errors.UserInputError: if an argument is out of range.
  """
  shape = _check_common_args(input_shape, num_classes, seed, image_input=True)
  inputs = tf.keras.Input(shape=shape, dtype=tf.float32, name='images')
  x = tf.keras.layers.Conv2D(
      32, 5, padding='same', activation='relu',
      kernel_initializer=_kernel_init(seed), name='conv1')(inputs)
  x = tf.keras.layers.MaxPool2D(2, strides=2, padding='same', name='pool1')(x)
  x = tf.keras.layers.Conv2D(
      64, 5, padding='same', activation='relu',
      kernel_initializer=_kernel_init(seed + 1), name='conv2')(x)
  x = tf.keras.layers.MaxPool2D(2, strides=2, padding='same', name='pool2')(x)
  x = tf.keras.layers.Flatten(name='flatten')(x)
  x = tf.keras.layers.Dense(
      512, activation='relu', kernel_initializer=_kernel_init(seed + 2),
      name='dense1')(x)
  logits = _classifier(num_classes, seed + 3)(x)
  return tf.keras.Model(inputs=inputs, outputs=logits, name='mcmahan_cnn')


def build_conv_dropout_cnn(input_shape: Sequence[int], num_classes: int,
                           seed: int) -> tf.keras.Model:
  """The conv-dropout CNN of Reddi et al. 2021, returning logits.

  conv3x3-32 'valid' relu -> conv3x3-64 'valid' relu -> maxpool 2x2 ->
  dropout 0.25 -> flatten -> dense-128 relu -> dropout 0.5 -> dense-C
  (`classifier`), as google-research/federated `create_conv_dropout_model`
  (https://arxiv.org/abs/2003.00295). RedGrape's `CNN_DropOut` is this model.
  For 28x28x1 inputs and 10 classes it has 1,199,882 parameters; features are
  the 128-dimensional output of the second dropout. Both dropouts are
  `BatchSeededDropout`: in training their masks are a pure function of (the
  layer's seed, the input batch), so a run repeats bit for bit; with
  `training=False` they are the identity.

  Args:
    input_shape: (height, width, channels) of one image.
    num_classes: number of logits C.
    seed: base seed; layer i (dropout layers included) uses seed + i.

  Returns:
    An uncompiled functional `tf.keras.Model`.

  Raises:
    errors.UserInputError: if an argument is out of range.
  """
  shape = _check_common_args(input_shape, num_classes, seed, image_input=True)
  inputs = tf.keras.Input(shape=shape, dtype=tf.float32, name='images')
  x = tf.keras.layers.Conv2D(
      32, 3, activation='relu', kernel_initializer=_kernel_init(seed),
      name='conv1')(inputs)
  x = tf.keras.layers.Conv2D(
      64, 3, activation='relu', kernel_initializer=_kernel_init(seed + 1),
      name='conv2')(x)
  x = tf.keras.layers.MaxPool2D(2, name='pool')(x)
  x = BatchSeededDropout(0.25, seed=seed + 2, name='dropout1')([x, inputs])
  x = tf.keras.layers.Flatten(name='flatten')(x)
  x = tf.keras.layers.Dense(
      128, activation='relu', kernel_initializer=_kernel_init(seed + 3),
      name='dense1')(x)
  x = BatchSeededDropout(0.5, seed=seed + 4, name='dropout2')([x, inputs])
  logits = _classifier(num_classes, seed + 5)(x)
  return tf.keras.Model(inputs=inputs, outputs=logits, name='conv_dropout_cnn')


def build_mlp(input_shape: Sequence[int], num_classes: int, seed: int,
              hidden: Sequence[int] = (200, 200)) -> tf.keras.Model:
  """A fully connected network, returning logits.

  flatten -> dense-h relu for each h in `hidden` -> dense-C (`classifier`).
  The default (200, 200) is the "2NN" of McMahan et al. 2017 (199,210
  parameters for 28x28x1 inputs and 10 classes). With `hidden=()` it is
  multinomial logistic regression and the features are the flattened pixels.

  Args:
    input_shape: shape of one example, e.g. (28, 28, 1).
    num_classes: number of logits C.
    seed: base seed; hidden layer i uses seed + i, the classifier the next.
    hidden: widths of the hidden layers.

  Returns:
    An uncompiled functional `tf.keras.Model`.

  Raises:
    errors.UserInputError: if an argument is out of range.
  """
  shape = _check_common_args(input_shape, num_classes, seed, image_input=False)
  if not all(isinstance(h, numbers.Integral) and h > 0 for h in hidden):
    raise errors.UserInputError(
        f'hidden must be a sequence of positive layer widths (got {hidden!r}).')
  inputs = tf.keras.Input(shape=shape, dtype=tf.float32, name='images')
  x = tf.keras.layers.Flatten(name='flatten')(inputs)
  for i, width in enumerate(hidden):
    x = tf.keras.layers.Dense(
        int(width), activation='relu',
        kernel_initializer=_kernel_init(seed + i), name=f'dense{i + 1}')(x)
  logits = _classifier(num_classes, seed + len(hidden))(x)
  return tf.keras.Model(inputs=inputs, outputs=logits, name='mlp')


def build_mlp100(input_shape: Sequence[int], num_classes: int,
                 seed: int) -> tf.keras.Model:
  """000's (and VIRTUAL's) MLP: two hidden ReLU layers of 100 units."""
  return build_mlp(input_shape, num_classes, seed, hidden=(100, 100))


MODEL_BUILDERS: dict[str, ModelBuilder] = {
    'cnn': build_mcmahan_cnn,
    'cnn_dropout': build_conv_dropout_cnn,
    'mlp': build_mlp,
    'mlp100': build_mlp100,
}


def build_model(name: str, input_shape: Sequence[int], num_classes: int,
                seed: int) -> tf.keras.Model:
  """Builds the model registered under `name` in `MODEL_BUILDERS`.

  Args:
    name: the `--model` flag value: one of the keys of `MODEL_BUILDERS`.
    input_shape: shape of one example, e.g. (28, 28, 1).
    num_classes: number of logits C.
    seed: base seed for the initializers.

  Returns:
    The model, with its last layer named `CLASSIFIER_LAYER`.

  Raises:
    errors.UserInputError: if `name` is unknown or an argument is out of range.
  """
  if name not in MODEL_BUILDERS:
    raise errors.UserInputError(
        f'model name (--model) must be one of {", ".join(MODEL_BUILDERS)} '
        f'(got {name!r}); for your own model pass a no-argument Keras model '
        'factory (spec.ModelSpec.from_keras)')
  return MODEL_BUILDERS[name](input_shape, num_classes, seed)


def classifier_name(model: tf.keras.Model) -> str:
  """The name of `model`'s classifier layer: `CLASSIFIER_LAYER` unless
  `mark_classifier` recorded another."""
  return getattr(model, _CLASSIFIER_NAME_ATTRIBUTE, CLASSIFIER_LAYER)


def mark_classifier(model: tf.keras.Model,
                    layer_name: str) -> tf.keras.Model:
  """Records on `model` that its classifier is the layer `layer_name`.

  A user's model may name its head as it likes (`spec.KerasModelSpec`); the
  mark travels with the model instance, so `classifier_layer`,
  `feature_extractor` and `feature_dim` find the head wherever the model is
  used (inside TFF computations too, which build their own instances).

  Args:
    model: the model.
    layer_name: the name of its final `Dense` layer.

  Returns:
    `model` itself.
  """
  if layer_name != CLASSIFIER_LAYER:
    setattr(model, _CLASSIFIER_NAME_ATTRIBUTE, layer_name)
  return model


def _describe_layer(layer: tf.keras.layers.Layer) -> str:
  activation = getattr(layer, 'activation', None)
  with_activation = (f' with activation {activation.__name__!r}'
                     if activation not in (None, tf.keras.activations.linear)
                     else '')
  return f'a {type(layer).__name__} layer {layer.name!r}{with_activation}'


def check_classifier_head(model: tf.keras.Model,
                          layer_name: str = CLASSIFIER_LAYER
                         ) -> tf.keras.layers.Dense:
  """Checks that a user's model ends in the head the algorithms split off.

  Args:
    model: a built Keras model.
    layer_name: the name its final layer must have.

  Returns:
    The classifier layer.

  Raises:
    errors.UserInputError: unless the model's last layer is a `Dense` layer
      named `layer_name` without activation (it must output logits).
  """
  layer = model.layers[-1] if model.layers else None
  activation = getattr(layer, 'activation', None)
  if not (isinstance(layer, tf.keras.layers.Dense) and
          layer.name == layer_name and
          activation in (None, tf.keras.activations.linear)):
    got = 'no layers' if layer is None else _describe_layer(layer)
    raise errors.UserInputError(
        f'the model\'s last layer must be a Dense layer named {layer_name!r} '
        f'without activation (it outputs logits); got {got} in model '
        f'{model.name!r}. Name your head {CLASSIFIER_LAYER!r} or pass '
        'classifier_layer=NAME.')
  return layer


def classifier_layer(model: tf.keras.Model) -> tf.keras.layers.Dense:
  """The model's final `Dense` layer: `CLASSIFIER_LAYER`, or the name that
  `mark_classifier` recorded.

  Args:
    model: a model from this module, or a user's model built by a
      `spec.KerasModelSpec` (or any model with such a layer).

  Returns:
    The layer itself (shared, not a copy): its `kernel` is W of shape
    [feature_dim, C] and its `bias` is b of shape [C].

  Raises:
    errors.UserInputError: if the model has no Dense layer of that name.
  """
  name = classifier_name(model)
  try:
    layer = model.get_layer(name)
  except ValueError as e:
    raise errors.UserInputError(
        f'model {model.name!r} has no layer named {name!r}: its last layer '
        f'must be a Dense layer named {CLASSIFIER_LAYER!r} (or pass '
        'classifier_layer=NAME to spec.ModelSpec.from_keras).') from e
  if not isinstance(layer, tf.keras.layers.Dense):
    raise errors.UserInputError(
        f'layer {name!r} of model {model.name!r} is a '
        f'{type(layer).__name__}, not a Dense layer: the model\'s last layer '
        f'must be a Dense layer named {CLASSIFIER_LAYER!r} (or pass '
        'classifier_layer=NAME to spec.ModelSpec.from_keras).')
  return layer


def feature_extractor(model: tf.keras.Model) -> tf.keras.Model:
  """The part of `model` before the classifier, as a model of its own.

  The returned model shares its layers (and so its variables) with `model`:
  training either one changes both.

  Args:
    model: a functional model from this module.

  Returns:
    A model with the same inputs whose output is the classifier's input,
    [B, feature_dim(model)].

  Raises:
    errors.UserInputError: if the model has no classifier layer.
  """
  features = classifier_layer(model).input
  return tf.keras.Model(
      inputs=model.inputs, outputs=features, name=f'{model.name}_features')


def feature_dim(model: tf.keras.Model) -> int:
  """The width of the features the classifier reads (rows of its kernel).

  Args:
    model: a built model from this module.

  Returns:
    The feature dimension, e.g. 512 for the McMahan CNN.

  Raises:
    errors.UserInputError: if the model has no classifier layer.
  """
  return int(classifier_layer(model).kernel.shape[0])
