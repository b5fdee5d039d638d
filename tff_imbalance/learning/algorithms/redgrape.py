"""RedGrape (Yang et al., "Decentralized Decoupled Training for Federated
Long-Tailed Learning", TMLR 2024; seeds/004) as a LearningProcess.

FedAvg over a two-stream model (`models.two_stream`) whose clients re-balance
the classifier W with local balanced data and global gradient prototypes
(`client_work/redgrape.py`); the prototypes are averaged per class inside the
client work (`aggregators/class_mean.py`). The process's model weights, what
the runner evaluates and saves, are the plain model's: P and W, without W_hat
(eq. 16).
"""

from tff_imbalance import compat
from tff_imbalance.learning.algorithms import fedavg_family
from tff_imbalance.learning.client_work import redgrape as redgrape_work
from tff_imbalance.models import spec as spec_lib
from tff_imbalance.models import two_stream

tff = compat.tff


def with_plain_model_weights(
    process: tff.learning.templates.LearningProcess,
    model_spec: two_stream.TwoStreamSpec,
) -> tff.learning.templates.LearningProcess:
  """The same process, whose model weights are the plain model's (no W_hat).

  Args:
    process: a process over `model_spec`'s two-stream weights.
    model_spec: the two-stream spec.

  Returns:
    A `LearningProcess` with the same `initialize` and `next` whose
    `get_model_weights` drops W_hat and whose `set_model_weights` replaces
    every weight but W_hat.
  """
  indices = two_stream.plain_trainable_indices(model_spec.build_keras())
  state_type = process.get_model_weights.type_signature.parameter
  two_stream_type = process.get_model_weights.type_signature.result
  plain_type = model_spec.plain().weights_type()

  @compat.tf_computation(two_stream_type)
  def to_plain(weights):
    return tff.learning.models.ModelWeights(
        trainable=[weights.trainable[i] for i in indices],
        non_trainable=list(weights.non_trainable))

  @compat.tf_computation(two_stream_type, plain_type)
  def replace_plain(weights, plain):
    trainable = list(weights.trainable)
    for plain_index, index in enumerate(indices):
      trainable[index] = plain.trainable[plain_index]
    return tff.learning.models.ModelWeights(
        trainable=trainable, non_trainable=list(plain.non_trainable))

  @compat.federated_computation(state_type)
  def get_model_weights(state):
    return to_plain(process.get_model_weights(state))

  @compat.federated_computation(state_type, plain_type)
  def set_model_weights(state, weights):
    return process.set_model_weights(
        state, replace_plain(process.get_model_weights(state), weights))

  return tff.learning.templates.LearningProcess(
      process.initialize, process.next, get_model_weights, set_model_weights)


def build_redgrape(
    model_spec: spec_lib.ModelSpec,
    client_optimizer: tff.learning.optimizers.Optimizer,
    server_optimizer: tff.learning.optimizers.Optimizer,
    *,
    learning_rate: float,
    rebalance_strength: float = 0.1,
    threshold: int = 8,
    local_epochs: int = 1,
) -> tff.learning.templates.LearningProcess:
  """RedGrape: FedAvg on a two-stream head with classifier re-balancing.

  The model is h = f(x; P), W and a supplementary classifier W_hat. Round t,
  client k with label set L_k receives (P, W, W_hat) and the global gradient
  prototypes {g_pro_c} (eq. 10) and (Algorithm 1):

  * computes its local prototypes g_pro_{k,c} = grad_W L(W; P, D_{k,c}) for
    c in L_k on the received model, in closed form (eq. 11);
  * takes T random examples of every class it holds at least T times as its
    balanced set D^bal_k (classes L^bal_k);
  * each local step updates P and W_hat by SGD on the loss of the logits
    W^T h + W_hat^T h (eq. 7), and W by the same batch gradient g_local
    (eq. 8) plus the re-balancing step lambda g_bal ||g_local|| / ||g_bal||
    (eq. 13), g_bal = (1/|L|)(sum_{c in L^bal_k} grad_W L(W; P, D^bal_{k,c})
    + sum_{c in L \\ L^bal_k} g_pro_c) (eqs. 9, 12) taken at the step's own
    (pre-update) P and W, ||.|| one norm over W's kernel and bias, from
    round 1 on (where no prototype exists yet, g_bal is its local part);
  * returns its model delta and its prototypes with a presence mask.

  The server averages the deltas weighted by example counts (eq. 14, applied
  with `server_optimizer`) and the prototypes per class over the clients
  holding the class, keeping last round's prototype of a class nobody held
  (eq. 15). Inference uses W only (eq. 16): the process's model weights are
  (P, W). With lambda = 0 this is FedAvg on the two-stream model.

  Args:
    model_spec: the plain model (features and a final Dense `classifier`).
    client_optimizer: local optimizer (the paper: SGD with momentum 0.9).
    server_optimizer: server optimizer on the averaged delta.
    learning_rate: the client learning rate eta_l of the re-balancing step.
    rebalance_strength: lambda >= 0 (004: 0.1).
    threshold: T >= 1 (004: 8).
    local_epochs: how many times each client's round dataset repeats its
      data (the runner's local epochs), to count each example once.

  Returns:
    A `tff.learning.templates.LearningProcess` whose model weights are the
    plain model's.
  """
  two_stream_spec = two_stream.TwoStreamSpec.of(model_spec)
  extension = redgrape_work.build_redgrape_extension(
      model_spec, learning_rate=learning_rate,
      rebalance_strength=rebalance_strength, threshold=threshold,
      local_epochs=local_epochs)
  process = fedavg_family.build_local_training_process(
      two_stream_spec, client_optimizer, server_optimizer,
      extension=extension)
  return with_plain_model_weights(process, two_stream_spec)
