"""Tests for tff_imbalance.models.builders."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from tff_imbalance import errors  # pylint: disable=g-import-not-at-top
from tff_imbalance.models import builders  # pylint: disable=g-import-not-at-top

MNIST_SHAPE = (28, 28, 1)

# Hand counts for 28x28x1 inputs and 10 classes (kernel + bias per layer):
# McMahan CNN: conv 5*5*1*32+32 = 832, conv 5*5*32*64+64 = 51,264,
#   dense 7*7*64*512+512 = 1,606,144, classifier 512*10+10 = 5,130.
# Conv-dropout CNN ('valid' convs: 28 -> 26 -> 24, pool -> 12):
#   conv 3*3*1*32+32 = 320, conv 3*3*32*64+64 = 18,496,
#   dense 12*12*64*128+128 = 1,179,776, classifier 128*10+10 = 1,290.
# MLP 200-200: 784*200+200 = 157,000, 200*200+200 = 40,200, 200*10+10 = 2,010.
# MLP 100-100 (000's): 784*100+100 = 78,500, 100*100+100 = 10,100,
#   100*10+10 = 1,010.
EXPECTED = {
    'cnn': (832 + 51_264 + 1_606_144 + 5_130, 512),
    'cnn_dropout': (320 + 18_496 + 1_179_776 + 1_290, 128),
    'mlp': (157_000 + 40_200 + 2_010, 200),
    'mlp100': (78_500 + 10_100 + 1_010, 100),
}


def _images(n: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).random((n, *MNIST_SHAPE), np.float32)


def test_published_parameter_counts():
  assert EXPECTED['cnn'][0] == 1_663_370
  assert EXPECTED['cnn_dropout'][0] == 1_199_882


@pytest.mark.parametrize('name', sorted(builders.MODEL_BUILDERS))
def test_parameter_count_and_feature_dim(name):
  model = builders.build_model(name, MNIST_SHAPE, 10, seed=0)
  num_params, dim = EXPECTED[name]
  assert model.count_params() == num_params
  assert builders.feature_dim(model) == dim


@pytest.mark.parametrize('name', sorted(builders.MODEL_BUILDERS))
@pytest.mark.parametrize('num_classes', [10, 62])
def test_output_is_logits_of_right_shape(name, num_classes):
  model = builders.build_model(name, MNIST_SHAPE, num_classes, seed=1)
  logits = model(_images(3), training=False)
  assert logits.shape == (3, num_classes)
  assert logits.dtype == tf.float32
  head = builders.classifier_layer(model)
  assert head.name == builders.CLASSIFIER_LAYER
  assert head is model.layers[-1]
  assert head.activation is tf.keras.activations.linear


@pytest.mark.parametrize('name', sorted(builders.MODEL_BUILDERS))
def test_features_times_classifier_equals_logits(name):
  model = builders.build_model(name, MNIST_SHAPE, 10, seed=2)
  x = _images(5)
  features = builders.feature_extractor(model)(x, training=False).numpy()
  assert features.shape == (5, builders.feature_dim(model))
  head = builders.classifier_layer(model)
  recomposed = features @ head.kernel.numpy() + head.bias.numpy()
  np.testing.assert_allclose(
      recomposed, model(x, training=False).numpy(), atol=1e-5)


def test_feature_extractor_shares_variables():
  model = builders.build_mcmahan_cnn(MNIST_SHAPE, 10, seed=0)
  extractor = builders.feature_extractor(model)
  model_refs = {v.ref() for v in model.trainable_variables}
  assert all(v.ref() in model_refs for v in extractor.trainable_variables)
  assert len(extractor.trainable_variables) == len(
      model.trainable_variables) - 2


@pytest.mark.parametrize('name', sorted(builders.MODEL_BUILDERS))
def test_same_seed_same_weights_other_seed_differs(name):
  first = builders.build_model(name, MNIST_SHAPE, 10, seed=7).get_weights()
  again = builders.build_model(name, MNIST_SHAPE, 10, seed=7).get_weights()
  other = builders.build_model(name, MNIST_SHAPE, 10, seed=8).get_weights()
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  kernels = [(a, b) for a, b in zip(first, other) if a.ndim > 1]
  assert all(not np.array_equal(a, b) for a, b in kernels)


def test_dropout_is_seeded_per_layer():
  model = builders.build_conv_dropout_cnn(MNIST_SHAPE, 10, seed=3)
  seeds = [layer.seed for layer in model.layers
           if isinstance(layer, tf.keras.layers.Dropout)]
  assert len(seeds) == 2 and len(set(seeds)) == 2


def test_mlp_custom_hidden_and_logistic_regression():
  model = builders.build_mlp(MNIST_SHAPE, 10, seed=0, hidden=(64,))
  assert model.count_params() == 784 * 64 + 64 + 64 * 10 + 10
  linear = builders.build_mlp(MNIST_SHAPE, 10, seed=0, hidden=())
  assert builders.feature_dim(linear) == 784


def test_unknown_model_name():
  with pytest.raises(errors.UserInputError) as e:
    builders.build_model('x', MNIST_SHAPE, 10, seed=0)
  assert str(e.value).startswith(
      "model name (--model) must be one of cnn, cnn_dropout, mlp, mlp100 "
      "(got 'x')")


@pytest.mark.parametrize('kwargs', [
    {'input_shape': (28, 28), 'num_classes': 10, 'seed': 0},
    {'input_shape': MNIST_SHAPE, 'num_classes': 1, 'seed': 0},
    {'input_shape': MNIST_SHAPE, 'num_classes': 10, 'seed': -1},
    {'input_shape': MNIST_SHAPE, 'num_classes': 10, 'seed': None},
])
def test_bad_arguments(kwargs):
  with pytest.raises(errors.UserInputError):
    builders.build_mcmahan_cnn(**kwargs)


def test_model_without_classifier_is_rejected():
  inputs = tf.keras.Input(shape=(4,))
  model = tf.keras.Model(inputs, tf.keras.layers.Dense(2, name='head')(inputs))
  with pytest.raises(errors.UserInputError, match='classifier'):
    builders.feature_extractor(model)


# A user's own Keras model (spec.ModelSpec.from_keras).


def _user_mlp(head_name='classifier', activation=None, model_name='mlp'):
  """A factory of a small 2-layer MLP that is not ours (named 'mlp' on
  purpose: it must never be replaced by `builders.build_mlp`)."""

  def build():
    inputs = tf.keras.Input(shape=(6,))
    hidden = tf.keras.layers.Dense(
        5, activation='relu',
        kernel_initializer=tf.keras.initializers.GlorotNormal(seed=1))(inputs)
    logits = tf.keras.layers.Dense(3, activation=activation, name=head_name)(
        hidden)
    return tf.keras.Model(inputs, logits, name=model_name)

  return build


def test_user_model_spec_reads_shape_and_classes_and_keeps_the_model():
  from tff_imbalance.models import spec as spec_lib  # pylint: disable=g-import-not-at-top
  model_spec = spec_lib.ModelSpec.from_keras(_user_mlp())
  assert model_spec.input_shape == (6,)
  assert model_spec.num_classes == 3
  model = model_spec.build_keras()
  # Ours would be 200-200 wide: the user's 6-5-3 MLP is what is built.
  assert model.count_params() == 6 * 5 + 5 + 5 * 3 + 3
  assert builders.feature_dim(model) == 5
  assert spec_lib.as_model_spec(model_spec) is model_spec


def test_user_classifier_name_is_found_through_the_mark():
  from tff_imbalance.models import spec as spec_lib  # pylint: disable=g-import-not-at-top
  model_spec = spec_lib.as_model_spec(_user_mlp('head'),
                                      classifier_layer='head')
  model = model_spec.build_keras()
  assert builders.classifier_layer(model).name == 'head'
  x = np.ones([2, 6], np.float32)
  head = builders.classifier_layer(model)
  np.testing.assert_allclose(
      head(builders.feature_extractor(model)(x)).numpy(), model(x).numpy(),
      rtol=1e-6)


@pytest.mark.parametrize('factory, classifier_layer, message', [
    (_user_mlp('head'), 'classifier',
     "last layer must be a Dense layer named 'classifier'.*got a Dense "
     "layer 'head'.*classifier_layer=NAME"),
    (_user_mlp(activation='softmax'), 'classifier',
     "without activation.*with activation 'softmax'"),
    (_user_mlp()(), 'classifier', 'not the model'),
    (lambda: 'not a model', 'classifier', 'must return a tf.keras.Model'),
])
def test_user_model_errors_name_the_fix(factory, classifier_layer, message):
  from tff_imbalance.models import spec as spec_lib  # pylint: disable=g-import-not-at-top
  with pytest.raises(errors.UserInputError, match=message):
    spec_lib.as_model_spec(factory, classifier_layer=classifier_layer)


def test_two_stream_spec_extends_the_given_spec_not_its_name():
  from tff_imbalance.models import spec as spec_lib  # pylint: disable=g-import-not-at-top
  from tff_imbalance.models import two_stream  # pylint: disable=g-import-not-at-top
  user_spec = spec_lib.ModelSpec.from_keras(_user_mlp('head'),
                                            classifier_layer='head')
  two_stream_spec = two_stream.TwoStreamSpec.of(user_spec)
  assert two_stream_spec.plain() is user_spec
  model = two_stream_spec.build_keras()
  # The user's 6-5-3 MLP plus W_hat (5 * 3 + 3), found by the user's name.
  assert model.count_params() == (6 * 5 + 5 + 5 * 3 + 3) + (5 * 3 + 3)
  assert builders.classifier_layer(model).name == 'head'
  assert model.get_layer(two_stream.SUPPLEMENTARY_LAYER).units == 3
