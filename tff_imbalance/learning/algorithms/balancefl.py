"""BalanceFL (Shuai et al., "BalanceFL: Addressing Class Imbalance in
Long-Tail Federated Learning", IPSN 2022; seeds/003) as a LearningProcess.

The server is FedAvg (sec. 5.1: "agnostic to the aggregation function"); the
clients run the shared local loop with BalanceFL's extension
(`client_work/balancefl.py`): knowledge inheritance from the received global
model on absent classes, class-balanced sampling, feature-space augmentation
and the smooth regulariser on activated classes.
"""

from tff_imbalance import compat
from tff_imbalance.learning.algorithms import fedavg_family
from tff_imbalance.learning.client_work import balancefl as balancefl_work
from tff_imbalance.models import spec as spec_lib

tff = compat.tff

# The switches and hyperparameters, here for the registry.
BalanceFLOptions = balancefl_work.BalanceFLOptions


def build_balancefl(
    model_spec: spec_lib.ModelSpec,
    client_optimizer: tff.learning.optimizers.Optimizer,
    server_optimizer: tff.learning.optimizers.Optimizer,
    options: balancefl_work.BalanceFLOptions,
) -> tff.learning.templates.LearningProcess:
  """BalanceFL: FedAvg whose clients self-balance their local update.

  Client i receives w^t, which is also its teacher F-hat, and, with m_j its
  count of class j, C_pos = {j : m_j > 0} (activated) and C_neg the rest
  (absent; per mini-batch with `options.absent='batch'`):

  * data: draws examples by class-balanced sampling, p_j = 1/|C_pos| for j in
    C_pos (eq. 5 with gamma = 0), as many as it holds;
  * features: f = phi(x) of the student; the CE term sees
    f + 1[u < p_aug,y] e with e ~ N(0, Sigma^i), Sigma^i the m_j-weighted mean
    of the per-class covariances of the teacher's features (eq. 6) and
    p_aug,j = (m_max - m_j) / m_max (eq. 7);
  * loss (eq. 10), averaged over each batch:
    L = L_KI + L_CE + lambda_1 L_Smooth, with
    L_KI = -sum_{j in C_neg} q-hat'_j log q'_j, q' = softmax(z / T) restricted
    to C_neg (eqs. 3-4; computed as the KL divergence, equal up to the
    teacher's entropy), L_CE = -log q_y with q the softmax over C_pos (eq. 8),
    L_Smooth = sum_{j in C_pos} q_j log q_j (eq. 9).

  The server averages the deltas weighted by example counts and applies them
  with `server_optimizer` (SGD with learning rate 1 is FedAvg). Each switch in
  `options` removes one component (003 table 4); all off is FedAvg.

  Args:
    model_spec: the model (with a final Dense named `classifier`).
    client_optimizer: local optimizer (the paper uses Adam, lr 0.005).
    server_optimizer: server optimizer on the averaged delta.
    options: BalanceFL's switches and hyperparameters.

  Returns:
    A `tff.learning.templates.LearningProcess` whose client data are
    `OrderedDict(train=dataset, client_index=one-element int32 dataset)`.
  """
  return fedavg_family.build_local_training_process(
      model_spec, client_optimizer, server_optimizer,
      extension=balancefl_work.build_extension(model_spec, options))
