"""The one exception type for bad user input.

Library code raises `UserInputError` with a message that names the offending
flag, file or value and says how to fix it. Entry points catch it and print the
message alone (no traceback), so every bad input ends with one clear line.
"""


class UserInputError(ValueError):
  """Bad input from the user: a flag value, a data file, an impossible split."""
