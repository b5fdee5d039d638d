"""Centralized training as a learning process: one virtual client, the pool.

The reference row "centralized" of 003's tables trains the same model on all
clients' data pooled. We run it through the same runner and outputs as every
federated algorithm: the task pools the clients' training splits into one
virtual client (`FederatedData.pooled`, the same examples the federated runs
train on), the cohort is that one client, and the process is FedAvg with
server SGD at learning rate 1.

Equivalence: with one client and a server step of 1, w^{t+1} = w^t - (w^t -
w_1) = w_1, the weights local SGD reached on the pool; a "round" is then
`local_epochs` shuffled epochs of mini-batch SGD on the pooled data, and R
rounds are R * local_epochs epochs, the same data budget as R rounds of
full-participation FedAvg (tested: one round equals the shared local loop run
directly on the pool). The only trace of the rounds is that the local
optimizer's state (e.g. momentum) restarts every `local_epochs` epochs.
"""

from tff_imbalance import compat
from tff_imbalance import losses
from tff_imbalance.learning import method
from tff_imbalance.learning.algorithms import fedavg_family
from tff_imbalance.models import spec as spec_lib

tff = compat.tff


def build_centralized(
    model_spec: spec_lib.ModelOrFactory,
    client_optimizer: tff.learning.optimizers.Optimizer,
    loss: losses.PerExampleLoss = losses.cross_entropy,
) -> tff.learning.templates.LearningProcess:
  """Plain mini-batch training of one model, for one virtual client.

  w^{t+1} = SGD_E(w^t; D), E local epochs of `client_optimizer` on the
  client's data D (all clients' data pooled for centralized training, one
  client's alone for local training): FedAvg (McMahan et al. 2017) with a
  single client and server SGD at learning rate 1, so that the server step
  adopts the trained weights exactly. `--server_lr` does not apply.

  Args:
    model_spec: the model.
      A `ModelSpec`, or a no-argument Keras model factory whose last layer
      is a Dense `classifier` (`spec_lib.as_model_spec`).
    client_optimizer: the optimizer of the training loop.
    loss: the per-example loss.

  Returns:
    A `tff.learning.templates.LearningProcess` for cohorts of one client.
  """
  model_spec = spec_lib.as_model_spec(model_spec)
  return fedavg_family.build_local_training_process(
      model_spec, client_optimizer,
      tff.learning.optimizers.build_sgdm(learning_rate=1.0), loss=loss)


def _centralized(model_spec, config, options, context):
  """One model trained on one client's data: the pool, or (local) each own."""
  del options, context  # Unused.
  return build_centralized(model_spec, config.client_optimizer(),
                           loss=config.per_example_loss())


# Reference rows, not federated: `centralized` trains on every client's data
# pooled into one virtual client (`FederatedData.pooled`); `local` trains one
# model per client on its own data (the task runs each client alone).
CENTRALIZED = method.Method('centralized', _centralized,
                            client_mode=method.ClientMode.POOLED)
LOCAL = method.Method('local', _centralized,
                      client_mode=method.ClientMode.EACH_ALONE)
