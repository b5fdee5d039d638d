"""Rows that more than one benchmark runs: one definition each.

BalanceFL's ablation (003 table 4) is run by `bench.balancefl_ablation` on
the embedded MNIST and by `bench.reproduce --table=balancefl_t4` on the full
MNIST; both take its rows from here.
"""

_BALANCEFL_COMPONENTS = ('balancefl_kd', 'balancefl_balanced_sampling',
                         'balancefl_feature_aug', 'balancefl_smooth')


def balancefl_only(*on: str) -> tuple[str, ...]:
  """--algo=balancefl with only the named components switched on."""
  unknown = set(on) - set(_BALANCEFL_COMPONENTS)
  if unknown:
    raise ValueError(f'not BalanceFL components: {sorted(unknown)}.')
  return ('--algo=balancefl',) + tuple(
      f'--no{name}' for name in _BALANCEFL_COMPONENTS if name not in on)


BALANCEFL_FEDAVG = 'FedAvg'
BALANCEFL_FULL = 'BalanceFL (all: KI + BS + FA + smooth)'
# 003 table 4's rows, from all components off (FedAvg) to all on.
BALANCEFL_ABLATION = (
    (BALANCEFL_FEDAVG, ('--algo=fedavg',)),
    ('+ balanced sampling (BS)',
     balancefl_only('balancefl_balanced_sampling')),
    ('+ knowledge inheritance (KI) only', balancefl_only('balancefl_kd')),
    ('KI + BS', balancefl_only('balancefl_kd', 'balancefl_balanced_sampling')),
    ('KI + BS + feature aug (FA)',
     balancefl_only('balancefl_kd', 'balancefl_balanced_sampling',
                    'balancefl_feature_aug')),
    (BALANCEFL_FULL, ('--algo=balancefl',)),
)
# 003 table 4's accuracy (percent, CIFAR10-LT, tau 2) of the rows above.
BALANCEFL_ABLATION_PAPER = (37.2, 38.4, 49.8, 55.8, 57.1, 58.3)
