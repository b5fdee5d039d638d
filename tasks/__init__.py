"""The task programs as the checkout runs them: `python -m tasks.mnist_lt`.

Thin entry points only: each task lives in `tff_imbalance.tasks` (installed
with the package, also `python -m tff_imbalance.tasks.<task>` and the
`tff-imbalance-<task>` console scripts). This package stays in the checkout
and is not installed.
"""
