"""Local training: every client trains its own model alone, no federation.

The reference row "local" of 003's tables: what a client reaches with its own
data only. Each client k runs `centralized.build_centralized`'s process (one
virtual client, server step 1) on its own training split for the same rounds
and local epochs as a federated run, through the ordinary runner, and its
final model is evaluated on the balanced test set. The result is reported as
the mean and the spread (population standard deviation) of every metric over
the clients.

With an output directory, each client's run writes the runner's usual
outputs under `clients/<k>/`; the top level holds `summary.json` (the means,
`<metric>_std`, `<metric>_min`, `<metric>_max` and the per-client finals
under `local_clients`) and `local_clients.csv` (one row per client).
"""

import csv
import dataclasses
import json
import os
from typing import Any, Callable, Optional

import numpy as np

from tff_imbalance import checkpointing
from tff_imbalance import compat
from tff_imbalance import runner
from tff_imbalance.data import federated
from tff_imbalance.learning import selection

tff = compat.tff

CLIENTS_DIR = 'clients'
CLIENTS_FILE = 'local_clients.csv'


def _client_config(config: runner.RunConfig, k: int) -> runner.RunConfig:
  if config.output_dir is None:
    return config
  output_dir = os.path.join(config.output_dir, CLIENTS_DIR, str(k))
  client = dataclasses.replace(config, output_dir=output_dir, quiet=True)
  # A resumed experiment resumes the clients it had reached; the ones it had
  # not started start afresh.
  return dataclasses.replace(
      client, resume=config.resume and bool(
          checkpointing.saved_rounds(client.checkpoint_dir)))


def summarize_clients(finals: list[dict[str, Any]]) -> dict[str, Any]:
  """Mean, std, min and max over clients of every scalar metric.

  A metric that is None for a client (e.g. AUC with a class absent from the
  test predictions) is left out of that metric's statistics; per-class
  accuracy is averaged class by class.

  Args:
    finals: each client's final evaluation metrics.

  Returns:
    `{metric: mean, metric_std, metric_min, metric_max, per_class_accuracy}`.
  """
  summary = {}
  for key in runner.SCALAR_EVAL_KEYS:
    values = np.array([f[key] for f in finals if f.get(key) is not None],
                      np.float64)
    if values.size == 0:
      summary[key] = None
      continue
    summary[key] = float(values.mean())
    summary[f'{key}_std'] = float(values.std())
    summary[f'{key}_min'] = float(values.min())
    summary[f'{key}_max'] = float(values.max())
  per_class = [f.get('per_class_accuracy') or [] for f in finals]
  num_classes = max(len(p) for p in per_class)
  summary['per_class_accuracy'] = [
      float(np.mean(values)) if values else None
      for values in ([p[c] for p in per_class
                      if c < len(p) and p[c] is not None]
                     for c in range(num_classes))]
  return summary


def run_each_client(process: tff.learning.templates.LearningProcess,
                    data: federated.FederatedData,
                    evaluate: Callable[[Any], dict[str, Any]],
                    config: runner.RunConfig,
                    extra_summary: Optional[dict[str, Any]] = None
                   ) -> dict[str, Any]:
  """Trains one model per client on its data alone; summarises over clients.

  Args:
    process: a one-client process (`centralized.build_centralized`); its
      `initialize` gives every client the same starting model.
    data: the clients' datasets.
    evaluate: maps `ModelWeights` to evaluation metrics.
    config: rounds, local training and output settings of every client.
    extra_summary: JSON-able facts added to the top-level summary.

  Returns:
    The summary over clients (see `summarize_clients`), with each client's
    final metrics under `local_clients`.
  """
  finals = []
  for k in range(data.num_clients):
    client_summary = runner.run(
        process, data.only_client(k),
        selection.UniformSelector(1, 1, config.seed), evaluate,
        _client_config(config, k))
    final = {key: client_summary.get(key)
             for key in runner.SCALAR_EVAL_KEYS + ('per_class_accuracy',)}
    finals.append(dict(client=k, client_id=data.client_ids[k], **final))
    if not config.quiet:
      print(f'client {k + 1}/{data.num_clients} ({data.client_ids[k]}): '
            f'balanced_acc {final["balanced_accuracy"]:.4f}', flush=True)
  summary = dict(summarize_clients(finals), rounds=config.rounds,
                 num_local_clients=len(finals), local_clients=finals,
                 **(extra_summary or {}))
  if config.output_dir is not None:
    _write_outputs(config.output_dir, summary, finals)
  return summary


def _write_outputs(output_dir: str, summary: dict[str, Any],
                   finals: list[dict[str, Any]]) -> None:
  runner.write_atomically(
      os.path.join(output_dir, runner.SUMMARY_FILE),
      lambda f: json.dump(summary, f, indent=2, allow_nan=False))
  columns = ('client', 'client_id') + runner.SCALAR_EVAL_KEYS

  def write_rows(handle):
    writer = csv.DictWriter(handle, columns, extrasaction='ignore')
    writer.writeheader()
    writer.writerows(finals)

  runner.write_atomically(os.path.join(output_dir, CLIENTS_FILE), write_rows)
