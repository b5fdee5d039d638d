"""Method options: hyperparameters declared once, flags generated from them.

Each method's options are a frozen dataclass in its own file
(`learning/algorithms/<method>.py`) whose fields are made with `option`:
the default, the help line and, where it differs from the method's
`FLAG_PREFIX` + the field's name, the flag's name. Its `__post_init__`
validates with `require` and `check_choices`, so that a bad value stops with
one line naming the flag, from Python as from the command line. The task
layer (`tff_imbalance/tasks/common.py`) defines one absl flag per field and builds the
options from the flags; library code never reads flags.
"""

import dataclasses
from typing import Any, Callable, Iterator, Optional

from tff_imbalance import errors


def option(default: Any, help: str, *, flag: Optional[str] = None,  # pylint: disable=redefined-builtin
           choices: Optional[tuple[str, ...]] = None,
           applies_if: Optional[tuple[Callable[[Any], bool], str]] = None):
  """A field of an options dataclass.

  Args:
    default: the default value (bool, int, float, str or tuple of floats: the
      flag's type follows it).
    help: the flag's help line.
    flag: the flag's name, where it is not the class's `FLAG_PREFIX` + the
      field's name (names users' commands already carry).
    choices: the allowed values of a str option (an enum flag).
    applies_if: (predicate on the options, where it applies) for an option
      that matters only with other settings of its method, e.g. psi
      selection's reading only with psi > 0.

  Returns:
    A `dataclasses.field`.
  """
  return dataclasses.field(
      default=default, metadata=dict(help=help, flag=flag, choices=choices,
                                     applies_if=applies_if))


def flag_name(options_class: type, field: dataclasses.Field) -> str:
  """The flag of one option: its own name, or the prefix + field name."""
  return field.metadata.get('flag') or (options_class.FLAG_PREFIX +
                                        field.name)


def flag_fields(options_class: type
               ) -> Iterator[tuple[str, dataclasses.Field]]:
  """(flag name, field) for every option of `options_class`."""
  for field in dataclasses.fields(options_class):
    yield flag_name(options_class, field), field


def flag_names(options_class: Optional[type]) -> tuple[str, ...]:
  """Every flag of `options_class` (none for a method without options)."""
  if options_class is None:
    return ()
  return tuple(name for name, _ in flag_fields(options_class))


def _flag_of(options: Any, name: str) -> str:
  return flag_name(type(options), _field(type(options), name))


def _field(options_class: type, name: str) -> dataclasses.Field:
  return next(f for f in dataclasses.fields(options_class) if f.name == name)


def require(options: Any, name: str, valid: bool, requirement: str,
            hint: str = '') -> None:
  """Stops on an invalid option with one line naming its flag.

  Args:
    options: the options instance.
    name: the field's name.
    valid: whether its value is valid.
    requirement: what it must be, e.g. '> 0'.
    hint: an optional sentence appended after the value.

  Raises:
    errors.UserInputError: unless `valid`.
  """
  if not valid:
    raise errors.UserInputError(
        f'--{_flag_of(options, name)} must be {requirement} (got '
        f'{getattr(options, name)}){"; " + hint if hint else ""}.')


def check_choices(options: Any) -> None:
  """Stops on a str option outside its `choices`, naming its flag.

  Raises:
    errors.UserInputError: for the first option outside its choices.
  """
  for flag, field in flag_fields(type(options)):
    choices = field.metadata.get('choices')
    value = getattr(options, field.name)
    if choices is not None and value not in choices:
      raise errors.UserInputError(
          f'--{flag} must be one of {", ".join(choices)} (got {value!r}).')


def moot_flags(options: Any) -> list[tuple[str, str]]:
  """(flag, where it applies) for the options that `options` makes moot."""
  moot = []
  for flag, field in flag_fields(type(options)):
    applies_if = field.metadata.get('applies_if')
    if applies_if is not None and not applies_if[0](options):
      moot.append((flag, applies_if[1]))
  return moot
