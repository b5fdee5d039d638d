"""The task programs: absl-flag wiring from data flags to a run.

`mnist_lt`, `femnist` and `demo` each define their flags at import and have a
`run()` (the program); `common` holds what every task shares. Run them as
`python -m tff_imbalance.tasks.<task>`, the `tff-imbalance-<task>` console
scripts, or `python -m tasks.<task>` from the checkout.
"""
