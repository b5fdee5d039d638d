"""Pixel-level transforms of a source's images (seeded, pure numpy)."""

import numpy as np

from tff_imbalance import errors
from tff_imbalance.data import arrays


def add_pixel_noise(examples: arrays.LabeledArrays, mean: float, std: float,
                    seed: int) -> arrays.LabeledArrays:
  """Fed-Focal's noisy MNIST (000 sec 4.2): Gaussian noise on 0-255 pixels.

  Every pixel p in [0, 1] becomes clip(255 p + N(mean, std), 0, 255) / 255.

  Args:
    examples: images in [0, 1].
    mean: noise mean on the 0-255 scale (the paper: 10).
    std: noise standard deviation on the 0-255 scale (the paper: 5), >= 0.
    seed: noise seed.

  Returns:
    The noisy examples (labels unchanged).
  """
  if not std >= 0:
    raise errors.UserInputError(f'--noise_std must be >= 0 (got {std}).')
  rng = np.random.default_rng(seed)
  noisy = examples.x * 255.0 + rng.normal(mean, std, examples.x.shape)
  return arrays.LabeledArrays(
      x=(np.clip(noisy, 0.0, 255.0) / 255.0).astype(np.float32), y=examples.y)
