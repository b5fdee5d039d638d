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
EXPECTED = {
    'cnn': (832 + 51_264 + 1_606_144 + 5_130, 512),
    'cnn_dropout': (320 + 18_496 + 1_179_776 + 1_290, 128),
    'mlp': (157_000 + 40_200 + 2_010, 200),
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
  assert str(e.value) == (
      "--model must be one of cnn, cnn_dropout, mlp (got 'x')")


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
