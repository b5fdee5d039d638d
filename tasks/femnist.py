"""`python -m tasks.femnist` in the checkout: `tff_imbalance.tasks.femnist`.

Flags, documentation and code are there; this file only keeps the
checkout's command line.
"""

from tff_imbalance.tasks import femnist

if __name__ == '__main__':
  femnist.run()
