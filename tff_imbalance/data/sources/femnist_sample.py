"""A small real FEMNIST subset shipped inside the package: the offline default.

`python -m tasks.femnist` with no `--data_dir` runs on it, the way
`tasks.mnist_lt` runs on the embedded MNIST digits.

What it is: every writer of two LEAF FEMNIST file pairs,
`all_data_10_niid_05_keep_0_{train,test}_9.json` and
`all_data_11_niid_05_keep_0_{train,test}_9.json` (LEAF, Caldas et al. 2018,
"niid" sampling at fraction 0.05, per-writer 90/10 train/test split), as
published in the public GitHub repository wenzhu23333/Federated-Learning at
commit 2ccec0f9187da0bd34bb57774b0959e4cbe22dac (data/femnist/), the files of
the project's `../shared/data/femnist-leaf-sample/`: 10 writers, 1,552
training and 179 test examples, every one of the 62 classes present (4 to 115
training examples each). `SAMPLE_FILE` (`femnist_sample.npz`, 207 KB)
holds, for each split, the 28x28 images as uint8 with 0 the background
(LEAF's pixel/255 with 1.0 the background, inverted and times 255: exact,
LEAF's values are k/255), the labels (62 classes, LEAF's order) and each
example's writer id. `build_sample` rebuilds
it from those JSON files:

  python -c "from tff_imbalance.data.sources import femnist_sample as s; \\
      s.build_sample('../shared/data/femnist-leaf-sample')"
"""

import os
from typing import Optional, Sequence

import numpy as np

from tff_imbalance.data import arrays
from tff_imbalance.data.sources import leaf

SAMPLE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           'femnist_sample.npz')
# The LEAF file pairs the sample keeps (the first two of the shared sample in
# sorted order); their writers are all kept, so each keeps its own test split.
SAMPLE_FILES = ('all_data_10_niid_05_keep_0', 'all_data_11_niid_05_keep_0')


def build_sample(leaf_dir: str, output_path: str = SAMPLE_FILE,
                 file_stems: Sequence[str] = SAMPLE_FILES) -> None:
  """Writes the compressed sample from LEAF JSON files.

  Args:
    leaf_dir: a LEAF FEMNIST folder with train/ and test/ subfolders.
    output_path: the .npz to write.
    file_stems: names of the file pairs to keep, without `_{split}_9.json`.
  """
  content = {}
  for split in ('train', 'test'):
    xs, ys, writers = [], [], []
    for stem in file_stems:
      # pylint: disable-next=protected-access  (the sample is LEAF's format)
      for writer, x, y in leaf._read_file(
          os.path.join(leaf_dir, split, f'{stem}_{split}_9.json')):
        xs.append(x)
        ys.append(y)
        writers.extend([writer] * len(y))
    pixels = np.concatenate(xs)
    # LEAF stores pixel/255 with 1.0 the background; 255 * (1 - x) restores
    # the byte with 0 the background.
    content[f'{split}_x'] = np.rint(255.0 * (1.0 - pixels)).astype(
        np.uint8).reshape([-1, 28, 28])
    content[f'{split}_y'] = np.concatenate(ys).astype(np.uint8)
    content[f'{split}_writers'] = np.asarray(writers, dtype=str)
  np.savez_compressed(output_path, **content)


def load_femnist_sample(max_test_per_class: Optional[int] = None,
                        seed: int = 0) -> arrays.SourceData:
  """Loads the shipped FEMNIST sample (see the module docstring).

  Args:
    max_test_per_class: if set, keep a balanced test subset of at most this
      many examples per class; None keeps all of them.
    seed: seed of the balanced test subset.

  Returns:
    `SourceData` with x float32 [N, 28, 28, 1] in [0, 1] (0.0 = background),
    62 classes, and `train_writer_ids`; the test set is the writers' own LEAF
    test examples.

  Raises:
    errors.UserInputError: `max_test_per_class` is not None or positive.
  """
  leaf.check_max_test_per_class(max_test_per_class)
  with np.load(SAMPLE_FILE) as content:
    splits = {
        split: arrays.LabeledArrays(
            x=(content[f'{split}_x'].astype(np.float32) / 255.0)[...,
                                                                  np.newaxis],
            y=content[f'{split}_y'].astype(np.int64))
        for split in ('train', 'test')
    }
    train_writers = content['train_writers']
  test = splits['test']
  if max_test_per_class is not None:
    test = test.take(leaf.balanced_subset_indices(test.y, max_test_per_class,
                                                  seed))
  return arrays.SourceData(
      train=splits['train'], test=test,
      num_classes=leaf.NUM_FEMNIST_CLASSES,
      train_writer_ids=train_writers,
      class_names=leaf.EMNIST_CLASS_NAMES)
