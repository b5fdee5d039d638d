"""Starts a TFF C++ worker that a driver reaches with `--workers=host:port`.

    python -m tff_imbalance.worker --port=8001 [--max_concurrent_clients=4]

runs the `worker_binary` shipped in the TFF wheel in the foreground (Ctrl-C
stops it; `tff-imbalance-worker` once installed); the driver runs `python -m
tasks.<task> ... --workers=host1:8001,host2:8001` and gives each worker a
share of every round's clients (`runtime.set_remote_execution_context`).

Security: the worker serves insecure gRPC without authentication, and runs
whatever TensorFlow graph a caller sends. TFF 0.87's binary always listens on
every interface (`[::]:PORT`, hard-coded in its servers.cc; it has no flag to
choose the address), so this command cannot bind to loopback. Keep the port
reachable from loopback or a private network only (a firewall rule that
admits only the driver, or an SSH tunnel to a firewalled port).
"""

import os
import sys
from typing import Sequence

from absl import app
from absl import flags

from tff_imbalance import runtime

_PORT = flags.DEFINE_integer('port', None, 'TCP port to serve on (1-65535).')
_MAX_CONCURRENT_CLIENTS = flags.DEFINE_integer(
    'max_concurrent_clients', None,
    'Clients this worker trains at once (default: its CPU cores).')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  port = _PORT.value
  if port is None or not 0 < port < 65536:
    raise app.UsageError(f'--port must be in 1-65535 (got {port}).')
  concurrency = _MAX_CONCURRENT_CLIENTS.value
  if concurrency is None:
    concurrency = os.cpu_count() or 1
  if concurrency < 1:
    raise app.UsageError(
        f'--max_concurrent_clients must be >= 1 (got {concurrency}).')
  print(f'TFF worker on port {port} (all interfaces: TFF 0.87\'s worker '
        'cannot bind one address), insecure gRPC without authentication: '
        'allow only loopback or a private network to reach it. Ctrl-C stops '
        'it.', file=sys.stderr, flush=True)
  command = runtime.worker_command(port, concurrency)
  # Replace this process: signals then reach the worker itself.
  os.execve(command[0], command, runtime.worker_environment())


def run() -> None:
  """The program (`python -m tff_imbalance.worker`, `tff-imbalance-worker`)."""
  app.run(main)


if __name__ == '__main__':
  run()
