"""Every registered algorithm repeats bit for bit under the same seed.

Each algorithm runs `runner.run` twice with one seed (2 rounds, 2 local
epochs, so that the methods that read a client's data more than once per round
do so several times) and must end with bit-identical weights; a run with
another `RunConfig.seed` (data order and client selection) must end elsewhere.
The same for FedAvg with `--model=cnn_dropout`, whose dropout masks are drawn
during training. Each process is built once and run three times.
"""

import numpy as np
import pytest
import tensorflow as tf

from tff_imbalance import runner
from tff_imbalance import runtime
from tff_imbalance.data import arrays
from tff_imbalance.data import federated
from tff_imbalance.learning import options as options_lib
from tff_imbalance.learning import registry
from tff_imbalance.learning import selection
from tff_imbalance.models import builders
from tff_imbalance.models import spec as spec_lib

NUM_CLIENTS, COHORT, NUM_CLASSES, ROUNDS = 4, 3, 4, 2
_MLP = spec_lib.ModelSpec('mlp', (6, 6, 1), NUM_CLASSES, seed=0)
# The smallest input the conv-dropout CNN takes (two 3x3 convs, a 2x2 pool).
_CNN_DROPOUT = spec_lib.ModelSpec('cnn_dropout', (6, 6, 1), NUM_CLASSES,
                                  seed=0)


def _data():
  rng = np.random.default_rng(0)
  # Uneven classes and client sizes, so that class-balanced resampling
  # (BalanceFL) and balanced sets (RedGrape) have something to do.
  y = np.minimum(rng.geometric(0.45, 160) - 1, NUM_CLASSES - 1).astype(
      np.int64)
  x = (rng.random((160, 6, 6, 1)) * 0.3 + y[:, None, None, None] / 4).astype(
      np.float32)
  pool = arrays.LabeledArrays(x=x, y=y)
  parts = np.split(rng.permutation(160), [30, 70, 110])
  data = federated.build_federated_data(pool, parts, NUM_CLASSES,
                                        validation_fraction=0.2, seed=0)
  aux = arrays.LabeledArrays(x=x[:24], y=np.arange(24) % NUM_CLASSES)
  return data, aux


# Option flags that keep the methods small here, where they apply.
_SMALL_OPTIONS = dict(psi=0.5, creff_features_per_class=4, creff_match_steps=3,
                      creff_retrain_epochs=3, redgrape_threshold=2)


def _final_weights(process, algo, data, seed):
  """The trainable weights after `ROUNDS` rounds of `runner.run`."""
  client_mode = registry.client_mode(algo)
  if client_mode == registry.ClientMode.POOLED:
    data = data.pooled()
  elif client_mode == registry.ClientMode.EACH_ALONE:
    data = data.only_client(1)  # What `runner.run_each_client` runs.
  cohort = min(COHORT, data.num_clients)
  if registry.get(algo).make_selector is not None:
    selector = selection.PsiSelector(data.num_clients, cohort, 0.5, seed)
  else:
    selector = selection.UniformSelector(data.num_clients, cohort, seed)
  weights = []

  def evaluate(model_weights):
    weights[:] = [np.asarray(w) for w in model_weights.trainable]
    return {}

  runner.run(process, data, selector, evaluate,
             runner.RunConfig(rounds=ROUNDS, local_epochs=2, batch_size=8,
                              eval_every=ROUNDS, seed=seed, quiet=True))
  return weights


def _assert_repeats_and_seed_matters(model_spec, algo, **config_overrides):
  runtime.set_local_execution_context()
  data, aux = _data()
  config = registry.AlgorithmConfig(
      client_lr=0.1, clients_per_round=COHORT, local_epochs=2, batch_size=8,
      **config_overrides)
  options = registry.make_options(algo, **{
      flag: value for flag, value in _SMALL_OPTIONS.items()
      if flag in options_lib.flag_names(registry.get(algo).options_class)})
  context = registry.TaskContext(
      num_classes=NUM_CLASSES, num_clients=NUM_CLIENTS,
      train_class_counts=np.bincount(data.train_labels(),
                                     minlength=NUM_CLASSES),
      aux_data=aux, client_sizes=np.array(
          [len(part) for part in data.client_train_partition()]))
  process = registry.build_process(algo, model_spec, config, context, options)
  first = _final_weights(process, algo, data, seed=0)
  again = _final_weights(process, algo, data, seed=0)
  other = _final_weights(process, algo, data, seed=1)
  assert len(first) == len(again) > 0
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b, strict=True)
  assert not all(np.array_equal(a, b) for a, b in zip(first, other))


@pytest.mark.parametrize('algo', registry.algorithm_names())
def test_same_seed_same_weights_bit_for_bit(algo):
  _assert_repeats_and_seed_matters(_MLP, algo)


def test_dropout_repeats_bit_for_bit():
  _assert_repeats_and_seed_matters(_CNN_DROPOUT, 'fedavg')


def test_dropout_masks_follow_the_batch_and_layer_seed():
  layer = builders.BatchSeededDropout(0.5, seed=3)
  other_layer = builders.BatchSeededDropout(0.5, seed=4)
  activations = tf.ones([64, 32])
  images = tf.reshape(tf.range(64 * 4, dtype=tf.float32), [64, 2, 2, 1])
  other_images = images + 1.0
  dropped = layer([activations, images], training=True).numpy()
  # Kept units are scaled by 1 / (1 - rate); about half are dropped.
  assert set(np.unique(dropped)) == {0.0, 2.0}
  assert 0.4 < np.mean(dropped == 0.0) < 0.6
  np.testing.assert_array_equal(
      layer([activations, images], training=True), dropped)
  assert not np.array_equal(
      layer([activations, other_images], training=True), dropped)
  assert not np.array_equal(
      other_layer([activations, images], training=True), dropped)
  np.testing.assert_array_equal(
      layer([activations, images], training=False), activations)
  np.testing.assert_array_equal(layer([activations, images]), activations)


@pytest.mark.parametrize('minority', registry.MINORITY_SOURCES)
def test_mfe_repeats_bit_for_bit(minority):
  _assert_repeats_and_seed_matters(_MLP, 'fedavg', loss='msfe',
                                   mfe_minority=minority)
