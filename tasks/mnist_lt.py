"""`python -m tasks.mnist_lt` in the checkout: `tff_imbalance.tasks.mnist_lt`.

Flags, documentation and code are there; this file only keeps the
checkout's command line.
"""

from tff_imbalance.tasks import mnist_lt

if __name__ == '__main__':
  mnist_lt.run()
