"""Source name -> loader, for entry points that pick a source by flag."""

import importlib
from typing import Any

from tff_imbalance import errors
from tff_imbalance.data import arrays

# Modules are imported on use: the embedded default should not pay for
# importing TFF or TFDS.
_LOADERS = {
    'embedded_mnist': ('embedded', 'load_embedded_mnist'),
    'femnist_sample': ('femnist_sample', 'load_femnist_sample'),
    'idx': ('idx', 'load_idx'),
    'leaf_femnist': ('leaf', 'load_leaf_femnist'),
    'tff_emnist': ('tff_emnist', 'load_tff_emnist'),
    'tfds': ('tfds_sources', 'load_tfds'),
}


def source_names() -> tuple[str, ...]:
  """The valid names for `load_source`, sorted."""
  return tuple(sorted(_LOADERS))


def load_source(name: str, **kwargs: Any) -> arrays.SourceData:
  """Calls the loader registered as `name` with `kwargs`.

  Args:
    name: one of `source_names()`.
    **kwargs: the loader's own arguments (see each module in this package).

  Returns:
    The loader's `SourceData`.

  Raises:
    errors.UserInputError: `name` is unknown, or the loader rejects its input.
  """
  if name not in _LOADERS:
    raise errors.UserInputError(
        f'Unknown data source {name!r}: use one of '
        f'{", ".join(source_names())}.')
  module_name, function_name = _LOADERS[name]
  module = importlib.import_module(
      f'tff_imbalance.data.sources.{module_name}')
  return getattr(module, function_name)(**kwargs)
