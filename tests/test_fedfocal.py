"""Fed-Focal end to end: focal local training and psi selection (000).

Per-slot validation losses reported inside the TFF computation drive psi
selection; the global reading's new-model losses come from a second small TFF
computation, checked here against the same loss computed by hand.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from tff_imbalance import runner
from tff_imbalance.data import arrays
from tff_imbalance.data import federated
from tff_imbalance.learning import registry
from tff_imbalance.learning import selection
from tff_imbalance.models import spec as spec_lib

NUM_CLIENTS, COHORT = 6, 3
SPEC = spec_lib.ModelSpec('mlp', (6, 6, 1), 4, seed=0)
CONTEXT = registry.TaskContext(num_classes=4, num_clients=NUM_CLIENTS,
                               train_class_counts=np.ones(4))
RUN = runner.RunConfig(rounds=3, local_epochs=1, batch_size=8, eval_every=10,
                       seed=0, quiet=True)


def _data(validation_fraction=0.25):
  rng = np.random.default_rng(0)
  y = rng.integers(0, 4, 240).astype(np.int64)
  x = (rng.random((240, 6, 6, 1)) * 0.3 + y[:, None, None, None] / 4).astype(
      np.float32)
  pool = arrays.LabeledArrays(x=x, y=y)
  parts = np.array_split(np.arange(240), NUM_CLIENTS)
  return federated.build_federated_data(
      pool, parts, 4, validation_fraction=validation_fraction, seed=0)


def _config(psi=None, psi_improvement=None, **kwargs):
  """(shared config, Fed-Focal's option flags that are set)."""
  option_flags = {flag: value for flag, value in (
      ('psi', psi), ('psi_improvement', psi_improvement)) if value is not None}
  return registry.AlgorithmConfig(client_lr=0.1, clients_per_round=COHORT,
                                  batch_size=RUN.batch_size,
                                  **kwargs), option_flags


def _run(algo, setup, data, run_config=RUN, wrap_selector=None):
  """Runs `algo` as tasks.common wires it; returns (selector, weights)."""
  config, option_flags = setup
  options = registry.make_options(algo, **option_flags)
  process = registry.build_process(algo, SPEC, config, CONTEXT, options)
  selector = registry.build_selector(algo, config, data, COHORT, seed=0,
                                     model_spec=SPEC, options=options)
  if wrap_selector is not None:
    wrap_selector(selector)
  weights = []

  def recording_evaluation(model_weights):
    weights[:] = [np.asarray(w) for w in model_weights.trainable]
    return dict.fromkeys(runner.SCALAR_EVAL_KEYS, 0.0)

  runner.run(process, data, selector, recording_evaluation, run_config)
  return selector, weights


def _record_observations(selector):
  """Makes `selector` remember each observed round's cohort and flags."""
  observe = selector.observe_round
  selector.history = []

  def recording_observe(round_num, cohort, measurements, model_weights):
    observe(round_num, cohort, measurements, model_weights)
    selector.history.append(dict(
        cohort=np.asarray(cohort), measurements=measurements,
        weights=model_weights,
        improved=selector.get_state()['improved'].astype(bool)))

  selector.observe_round = recording_observe


def test_gamma_zero_psi_zero_is_fedavg_and_gamma_two_is_not():
  # Fed-Focal's key term is the focal modulation (1 - p_t)^gamma (eq. 4):
  # gamma = 0, alpha = 1 is cross-entropy, so with uniform selection (psi =
  # 0) it must train exactly FedAvg; gamma = 2 must not.
  data = _data(validation_fraction=0.0)
  _, fedavg = _run('fedavg', _config(), data)
  _, focal0 = _run('fedfocal', _config(psi=0.0, focal_gamma=0.0), data)
  _, focal2 = _run('fedfocal', _config(psi=0.0, focal_gamma=2.0), data)
  for a, b in zip(fedavg, focal0):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert max(np.abs(a - b).max() for a, b in zip(fedavg, focal2)) > 1e-3


def _focal_validation_loss(data, client, trainable, gamma=2.0):
  """L_k(w): mean focal loss of `client`'s validation split, by hand."""
  model = SPEC.build_keras()
  model.set_weights(trainable)  # The MLP has no non-trainable weights.
  examples = data.pool.take(data.validation_indices[client])
  log_p = tf.nn.log_softmax(model(examples.x, training=False)).numpy()
  log_pt = log_p[np.arange(len(examples.y)), examples.y]
  return np.mean(-(1 - np.exp(log_pt)) ** gamma * log_pt)


def test_global_reading_keeps_clients_whose_loss_fell_under_the_new_model():
  data = _data()
  selector, _ = _run('fedfocal', _config(psi=1.0), data,
                     wrap_selector=_record_observations)
  assert selector.improvement == selection.GLOBAL
  assert len(selector.history) == RUN.rounds
  for seen in selector.history:
    before = np.asarray(seen['measurements']['client_work']['round_report']
                        ['validation_loss_before'])
    new_model = [np.asarray(w) for w in seen['weights'].trainable]
    after = np.array([_focal_validation_loss(data, k, new_model)
                      for k in seen['cohort']])
    assert np.all(np.abs(after - before) > 1e-4)  # No float ties to judge.
    np.testing.assert_array_equal(seen['improved'], after < before)
  for seen, cohort in zip(selector.history, selector.history[1:]):
    # psi = 1 keeps every improved client of the last round (eqs. 8-13).
    assert set(seen['cohort'][seen['improved']]) <= set(cohort['cohort'])
  assert selector.summary()['local_improved_fraction'] is not None


def test_local_reading_keeps_every_client_improved_by_its_own_training():
  data = _data()
  selector, _ = _run('fedfocal', _config(psi=1.0, psi_improvement='local'),
                     data, wrap_selector=_record_observations)
  assert selector.improvement == selection.LOCAL
  for seen in selector.history:
    np.testing.assert_array_equal(
        seen['improved'], selection.improved_slots(seen['measurements']))
  for seen, cohort in zip(selector.history, selector.history[1:]):
    assert set(seen['cohort'][seen['improved']]) <= set(cohort['cohort'])


def test_global_reading_resumes_to_the_same_cohorts_and_weights(tmp_path):
  data = _data()
  config = _config(psi=0.6)
  whole = dataclasses.replace(RUN, rounds=4, eval_every=1)
  full_selector, full_weights = _run(
      'fedfocal', config, data, dataclasses.replace(
          whole, output_dir=str(tmp_path / 'full')))
  _run('fedfocal', config, data, dataclasses.replace(
      whole, rounds=2, output_dir=str(tmp_path / 'cut'), checkpoint_every=2))
  resumed_selector, resumed_weights = _run(
      'fedfocal', config, data, dataclasses.replace(
          whole, output_dir=str(tmp_path / 'cut'), checkpoint_every=2,
          resume=True))
  full_rows = (tmp_path / 'full' / runner.METRICS_FILE).read_text()
  cut_rows = (tmp_path / 'cut' / runner.METRICS_FILE).read_text()
  clients = lambda text: [line.rsplit(',', 1)[-1]
                          for line in text.splitlines()]
  assert clients(full_rows) == clients(cut_rows)
  for a, b in zip(full_weights, resumed_weights):
    np.testing.assert_array_equal(a, b)
  assert resumed_selector.summary() == full_selector.summary()
