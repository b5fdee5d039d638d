"""CLIMB: client-level re-weighting by a primal-dual method (Shen et al. 2022).

Shen, Cervino, Hassani, Ribeiro, "An Agnostic Approach to Federated Learning
with Class Imbalance" (ICLR 2022). The federated objective is constrained so
that no client's loss exceeds the average by more than a tolerance:

  min_w (1/N) sum_k f_k(w)  s.t.  f_k(w) - (1/N) sum_j f_j(w) <= epsilon.

Its Lagrangian, with one dual variable lambda_k >= 0 per client of the
population, is sum_k (1/N)(1 + lambda_k - mean(lambda)) f_k(w) - epsilon
sum_k lambda_k: the primal step is FedAvg with client weights
(n_k / N)(1 + lambda_k - mean(lambda)), the dual step projected ascent on the
constraint violations measured with the global model.

The duals are the shared client work's broadcast state (a [N] vector on the
server, updated inside the TFF computation after each round); each client
gets its population index with its data, evaluates the model it received on
its own data before local training (the constraint signal f_k(w^t)), reports
it at its index of an [N] vector, and scales its aggregation weight by
1 + lambda_k - mean(lambda).

Unlike RedGrape's copy of CLIMB, whose duals never move (NOTES.md, finding
2: its loss sum is added once per state-dict key), the duals here follow the official code's update
(`shenzebang/Federated-Learning-Pytorch`, `core/imbalance_fl.py`); tested.
"""

import collections

import numpy as np
import tensorflow as tf

from tff_imbalance import compat
from tff_imbalance import losses
from tff_imbalance.learning.algorithms import fedavg_family
from tff_imbalance.learning.client_work import local_training
from tff_imbalance.models import spec as spec_lib

tff = compat.tff


def aggregation_multiplier(duals: tf.Tensor,
                           client_index: tf.Tensor) -> tf.Tensor:
  """1 + lambda_k - mean(lambda), floored at 0.

  The floor is ours: TFF's weighted mean needs non-negative weights, and the
  official code's multiplier goes negative only when mean(lambda) > 1 +
  lambda_k (a client far inside its constraint).
  """
  duals = tf.convert_to_tensor(duals, tf.float32)
  return tf.maximum(1.0 + tf.gather(duals, client_index) -
                    tf.reduce_mean(duals), 0.0)


def dual_update(duals: tf.Tensor, loss_sums: tf.Tensor,
                participated: tf.Tensor, *, epsilon: float, dual_lr: float,
                max_dual: float) -> tf.Tensor:
  """Projected dual ascent on the round's participants.

  lambda_k <- clip(lambda_k + eta_D (f_k - mean_S f - epsilon) / N, 0,
  max_dual) for every client k of the round's cohort S, where f_k is the
  loss of the model the cohort received on client k's data and mean_S its
  mean over the cohort (the official code evaluates every client each dual
  step and averages over all N; with partial participation the cohort stands
  in for the population). Clients outside S keep their duals.

  Args:
    duals: [N] current duals.
    loss_sums: [N] f_k at the participants' indices, 0 elsewhere.
    participated: [N] 1 at the participants' indices, 0 elsewhere.
    epsilon: the constraint tolerance.
    dual_lr: the dual step size eta_D.
    max_dual: the upper clip of every dual.

  Returns:
    The [N] updated duals.
  """
  num_clients = tf.cast(tf.size(duals), tf.float32)
  in_cohort = participated > 0
  client_loss = tf.math.divide_no_nan(loss_sums, participated)
  cohort_mean = tf.math.divide_no_nan(
      tf.reduce_sum(loss_sums), tf.reduce_sum(participated))
  ascended = tf.clip_by_value(
      duals + dual_lr * (client_loss - cohort_mean - epsilon) / num_clients,
      0.0, max_dual)
  return tf.where(in_cohort, ascended, duals)


def build_climb(
    model_spec: spec_lib.ModelSpec,
    client_optimizer: tff.learning.optimizers.Optimizer,
    server_optimizer: tff.learning.optimizers.Optimizer,
    num_clients: int,
    *,
    epsilon: float = 0.01,
    dual_lr: float = 2.0,
    max_dual: float = 100.0,
    loss: losses.PerExampleLoss = losses.cross_entropy,
) -> tff.learning.templates.LearningProcess:
  """CLIMB (Shen et al., ICLR 2022, their Algorithm 1), one dual step a round.

  Round t, cohort S with duals lambda^t (server state, [N]):
    1. each client k in S evaluates f_k(w^t), the mean `loss` of the received
       model on its local data, then trains locally as FedAvg does;
    2. the server aggregates the deltas with weights
       n_k (1 + lambda_k - mean(lambda)) (the Lagrangian's primal weights,
       normalised over the cohort by TFF's weighted mean) and applies them
       with `server_optimizer`;
    3. lambda^{t+1} = `dual_update`(lambda^t, f), the projected dual ascent
       on f_k - mean f - epsilon.
  The official code runs 5 primal rounds per dual step over all clients;
  RedGrape (004 appendix C.2, epsilon 0.01 and eta_D 2.0 on MNIST-LT) and we
  take one dual step per round on the cohort.

  Args:
    model_spec: the model.
    client_optimizer: local optimizer.
    server_optimizer: server optimizer applied to the weighted mean delta.
    num_clients: the population size N (one dual per client).
    epsilon: the constraint tolerance epsilon >= 0.
    dual_lr: the dual step size eta_D > 0.
    max_dual: the upper clip of the duals (the official code's 100).
    loss: the per-example local loss, also the constraint's f_k.

  Returns:
    A `tff.learning.templates.LearningProcess` whose clients need
    `client_index` in their data; the duals are the state's
    `client_work['broadcast']` and each round's f_k are the measurements'
    `client_work/round_report/extension/loss_sums`.
  """

  def report_received_model_loss(model, dataset, duals, client_index):
    del duals  # The constraint signal is the plain local objective.
    mean_loss = local_training.evaluate_mean_loss(model, loss, dataset, ())
    at_index = tf.one_hot(client_index, num_clients, dtype=tf.float32)
    return collections.OrderedDict(loss_sums=at_index * mean_loss,
                                   participated=at_index)

  def update_duals(duals, report):
    return dual_update(duals, report['loss_sums'], report['participated'],
                       epsilon=epsilon, dual_lr=dual_lr, max_dual=max_dual)

  def weight(num_examples, duals, client_index):
    return num_examples * aggregation_multiplier(duals, client_index)

  extension = local_training.ClientWorkExtension(
      initial_broadcast=lambda: np.zeros([num_clients], np.float32),
      client_report=report_received_model_loss,
      update_broadcast=update_duals,
      with_client_index=True,
      report_before_training=True,
      update_weight=weight)
  return fedavg_family.build_local_training_process(
      model_spec, client_optimizer, server_optimizer,
      # The broadcast state is the duals, which weight aggregation, not the
      # local loss.
      loss=lambda labels, logits, duals: loss(labels, logits, ()),
      extension=extension)
