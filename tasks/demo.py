"""`python -m tasks.demo` in the checkout: `tff_imbalance.tasks.demo`.

Flags, documentation and code are there; this file only keeps the
checkout's command line.
"""

from tff_imbalance.tasks import demo

if __name__ == '__main__':
  demo.run()
