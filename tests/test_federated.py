"""Partitioned arrays -> per-round client inputs and TFF ClientData."""

import numpy as np

from tff_imbalance.data import arrays
from tff_imbalance.data import federated


def _data(validation_fraction=0.25):
  y = np.repeat(np.arange(4), 10).astype(np.int64)
  x = np.arange(40, dtype=np.float32).reshape(40, 1, 1, 1) * np.ones(
      (1, 2, 2, 1), np.float32)
  parts = [np.arange(0, 20), np.arange(20, 40)]
  return federated.build_federated_data(
      arrays.LabeledArrays(x=x, y=y), parts, 4,
      validation_fraction=validation_fraction, seed=0, client_ids=['a', 'b'])


def test_split_covers_each_client_exactly_once():
  data = _data()
  for part, train, val in zip([range(20), range(20, 40)], data.train_indices,
                              data.validation_indices):
    assert sorted(np.concatenate([train, val])) == list(part)
    assert len(val) == 6  # round_half_up(0.25 * 10) = 3 per class, 2 classes


def test_client_data_holds_each_clients_training_examples():
  data = _data()
  client_data = data.to_client_data()
  assert client_data.client_ids == ['a', 'b']
  labels = [int(e['y']) for e in client_data.create_tf_dataset_for_client('b')]
  assert sorted(labels) == sorted(data.pool.y[data.train_indices[1]].tolist())


def test_round_inputs_shuffle_per_round_and_carry_slots():
  data = _data()
  order = lambda inputs: [b['x'][:, 0, 0, 0].numpy().tolist()
                          for b in inputs[0]]
  kwargs = dict(local_epochs=1, batch_size=64, seed=0, with_validation=False)
  first = data.round_inputs([1], round_num=1, **kwargs)
  again = data.round_inputs([1], round_num=1, **kwargs)
  later = data.round_inputs([1], round_num=2, **kwargs)
  assert order(first) == order(again) != order(later)
  with_validation = data.round_inputs([1, 0], round_num=1, local_epochs=1,
                                      batch_size=64, seed=0,
                                      with_validation=True)
  assert [int(next(iter(i['slot']))) for i in with_validation] == [0, 1]
  assert sum(len(b["y"]) for b in with_validation[0]["validation"]) == 6


def test_every_pass_over_a_round_dataset_gives_the_same_batches():
  # A client computation may read its data several times in a round
  # (statistics, then training); a TF shuffle reshuffled on every pass.
  data = _data()
  dataset = data.train_dataset(1, round_num=3, local_epochs=2, batch_size=4,
                               seed=0)
  passes = [[b['x'][:, 0, 0, 0].numpy().tolist() for b in dataset]
            for _ in range(3)]
  assert passes[0] == passes[1] == passes[2]


def test_each_local_epoch_is_its_own_seeded_permutation():
  data = _data()
  kwargs = dict(round_num=2, local_epochs=2, batch_size=64)
  [batch] = list(data.train_dataset(0, seed=0, **kwargs))
  [other_seed] = list(data.train_dataset(0, seed=1, **kwargs))
  indices = data.train_indices[0]
  # x of example i is i in every pixel, so x names the pool index.
  seen = batch['x'][:, 0, 0, 0].numpy().astype(int)
  first, second = seen[:len(indices)], seen[len(indices):]
  assert sorted(first) == sorted(second) == sorted(indices.tolist())
  assert first.tolist() != second.tolist()
  np.testing.assert_array_equal(batch['y'].numpy(), data.pool.y[seen])
  assert other_seed['x'][:, 0, 0, 0].numpy().astype(int).tolist() != (
      seen.tolist())
  epoch = federated.epoch_order(len(indices), seed=0, client_index=0,
                                round_num=2, epoch=1)
  np.testing.assert_array_equal(second, indices[epoch])
