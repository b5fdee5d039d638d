"""BalanceFL (Shuai et al., "BalanceFL: Addressing Class Imbalance in
Long-Tail Federated Learning", IPSN 2022; seeds/003) as a LearningProcess.

The server is FedAvg (sec. 5.1: "agnostic to the aggregation function");
BalanceFL changes only what a client does between receiving w^t and sending
its delta. It plugs into the shared local loop
(`local_training.build_local_training_client_work`) with a teacher, the
client's population index and two hooks:

* `prepare` (once per client and round, with the received model, which is
  also the teacher): counts the client's labels (m_j), derives the
  activated classes C_pos (count > 0) and the absent ones C_neg; for feature
  augmentation, runs the teacher over the local data and forms the pooled
  feature covariance Sigma (eq. 6) and the per-class augmentation probability
  (eq. 7); for balanced sampling, resamples the dataset (eq. 5, gamma = 0, see
  `data.sampling`).
* `batch_loss` (every step): eq. 10, i.e.
  L = L_KI(teacher, student; C_neg, T) + L_CE(y, aug logits; C_pos)
      + lambda_1 * L_Smooth(student; C_pos).

Every component has its own switch (`BalanceFLOptions`), so 003 table 4's
ablation is one flag set per row; with every switch off the loss is plain
softmax cross-entropy and the process is FedAvg (tested).

Randomness (class choices, which examples get noise, the noise) is stateless,
seeded by (seed, round, client index): the broadcast state is the round
counter and the client work asks the runner for each client's index.
"""

import collections
import dataclasses

import numpy as np
import tensorflow as tf

from tff_imbalance import compat
from tff_imbalance.data import sampling
from tff_imbalance.learning import method
from tff_imbalance.learning import options as options_lib
from tff_imbalance.learning.algorithms import fedavg_family
from tff_imbalance.learning.client_work import balancefl_losses
from tff_imbalance.learning.client_work import local_training
from tff_imbalance.models import builders
from tff_imbalance.models import spec as spec_lib

tff = compat.tff

# Where the absent classes C_neg come from: the client's whole data (the
# paper, sec. 5.2) or each mini-batch (the reference code, NOTES.md sec. 3).
ABSENT_MODES = ('client', 'batch')


@dataclasses.dataclass(frozen=True)
class BalanceFLOptions:
  """BalanceFL's switches and hyperparameters (the paper's defaults).

  Attributes:
    knowledge_inheritance: distil the received model on absent classes
      (eqs. 3-4) and restrict cross-entropy to activated classes (eq. 8);
      off: plain softmax cross-entropy over all classes.
    balanced_sampling: class-balanced sampling over activated classes (eq. 5,
      gamma = 0).
    feature_augmentation: Gaussian feature noise N(0, Sigma) (eq. 6) with
      class probability (m_max - m_c) / m_max (eq. 7), on the features that
      feed the cross-entropy term.
    smooth_regularization: add lambda_1 * negative entropy over activated
      classes (eq. 9).
    temperature: distillation temperature T (sec. 7.1: 2).
    smooth_weight: lambda_1 of eq. 10. The reference code subtracts 0.002 x
      the batch SUM of entropies; at its batch size of 64 that is 0.128 x the
      batch mean, our reduction, hence the default.
    absent: 'client' (paper) or 'batch' (reference code), see ABSENT_MODES.
  """
  FLAG_PREFIX = 'balancefl_'
  knowledge_inheritance: bool = options_lib.option(
      True, 'BalanceFL knowledge inheritance: distil the received model on '
      'absent classes, CE on activated classes (003 eqs. 3-4, 8); off: plain '
      'CE.', flag='balancefl_kd')
  balanced_sampling: bool = options_lib.option(
      True, 'BalanceFL class-balanced sampling over activated classes (003 '
      'eq. 5, gamma=0).')
  feature_augmentation: bool = options_lib.option(
      True, 'BalanceFL feature-space augmentation (003 eqs. 6-7).',
      flag='balancefl_feature_aug')
  smooth_regularization: bool = options_lib.option(
      True, 'BalanceFL smooth regulariser on activated classes (003 eq. 9).',
      flag='balancefl_smooth')
  temperature: float = options_lib.option(
      2.0, 'BalanceFL distillation temperature T > 0 (003: 2).')
  smooth_weight: float = options_lib.option(
      0.128, 'BalanceFL lambda_1 >= 0 on the batch-mean negative entropy '
      '(reference code: 0.002 x batch sum at batch 64).')
  absent: str = options_lib.option(
      'client', 'BalanceFL absent classes: per client (the paper) or per '
      'mini-batch (the reference code).', choices=ABSENT_MODES)

  def __post_init__(self):
    options_lib.require(self, 'temperature', self.temperature > 0, '> 0',
                        'the paper uses 2')
    options_lib.require(self, 'smooth_weight', self.smooth_weight >= 0,
                        '>= 0')
    options_lib.check_choices(self)


def augmentation_probability(label_counts: tf.Tensor) -> tf.Tensor:
  """Eq. 7: p_c = (m_max - m_c) / m_max per class (0 for absent classes).

  Args:
    label_counts: [C] local counts m_c.

  Returns:
    [C] float32 probabilities; 0 for the largest class.
  """
  counts = tf.cast(label_counts, tf.float32)
  m_max = tf.reduce_max(counts)
  return tf.where(counts > 0, tf.math.divide_no_nan(m_max - counts, m_max),
                  0.0)


def pooled_covariance(feature_outer_sum: tf.Tensor, class_feature_sums:
                      tf.Tensor, label_counts: tf.Tensor) -> tf.Tensor:
  """Eq. 6: Sigma = sum_c m_c Sigma_c / sum_c m_c from streamed sums.

  With Sigma_c the (population) covariance of class c's features f_i,
  m_c Sigma_c = sum_{i in c} f_i f_i^T - s_c s_c^T / m_c (s_c the feature sum
  of class c), so Sigma needs only sum_i f_i f_i^T [d, d], s_c [C, d] and m_c,
  accumulated in one pass. (The reference uses np.cov's m_c - 1 divisor.)

  Args:
    feature_outer_sum: [d, d] sum over examples of f f^T.
    class_feature_sums: [C, d] per-class sums of features.
    label_counts: [C] counts m_c.

  Returns:
    [d, d] pooled covariance (symmetric positive semi-definite).
  """
  counts = tf.cast(label_counts, tf.float32)
  centred = tf.math.divide_no_nan(class_feature_sums,
                                  tf.sqrt(counts)[:, tf.newaxis])
  within = feature_outer_sum - tf.matmul(centred, centred, transpose_a=True)
  return within / tf.maximum(tf.reduce_sum(counts), 1.0)


def noise_factor(covariance: tf.Tensor) -> tf.Tensor:
  """L with L L^T = Sigma, so that z L^T ~ N(0, Sigma) for z ~ N(0, I).

  Uses the eigendecomposition rather than Cholesky: Sigma from few local
  examples is usually singular.
  """
  covariance = 0.5 * (covariance + tf.transpose(covariance))
  eigenvalues, eigenvectors = tf.linalg.eigh(covariance)
  return eigenvectors * tf.sqrt(tf.maximum(eigenvalues, 0.0))[tf.newaxis, :]


def _client_seed(seed: int, round_num: tf.Tensor,
                 client_index: tf.Tensor) -> tf.Tensor:
  """[2] int64 stateless seed from (seed, round, client)."""
  seed = tf.constant([seed, 0x5EED], tf.int64)
  seed = tf.random.experimental.stateless_fold_in(seed,
                                                  tf.cast(round_num, tf.int64))
  return tf.random.experimental.stateless_fold_in(
      seed, tf.cast(client_index, tf.int64))


def _teacher_statistics(teacher_features: tf.keras.Model,
                        dataset: tf.data.Dataset, num_classes: int,
                        dim: int) -> collections.OrderedDict:
  """One pass over the local data: label counts and feature sums (eq. 6)."""
  counts = tf.zeros([num_classes], tf.int64)
  outer = tf.zeros([dim, dim], tf.float32)
  class_sums = tf.zeros([num_classes, dim], tf.float32)
  for batch in iter(dataset):
    one_hot = tf.one_hot(batch['y'], num_classes, dtype=tf.float32)
    counts += tf.cast(tf.reduce_sum(one_hot, axis=0), tf.int64)
    if teacher_features is not None:
      features = teacher_features(batch['x'], training=False)
      outer += tf.matmul(features, features, transpose_a=True)
      class_sums += tf.matmul(one_hot, features, transpose_a=True)
  return collections.OrderedDict(counts=counts, outer=outer,
                                 class_sums=class_sums)


def build_plugin(model_spec: spec_lib.ModelSpec, options: BalanceFLOptions,
                 *, batch_size: int,
                 seed: int) -> local_training.LocalLoopPlugin:
  """The `LocalLoopPlugin` that turns the shared loop into BalanceFL's.

  Args:
    model_spec: the model (its classifier is the last Dense, `classifier`).
    options: the switches and hyperparameters.
    batch_size: the batch size of the resampled dataset.
    seed: base seed of the client-side randomness.

  Returns:
    A plug-in with a teacher, `prepare` and `batch_loss`; its broadcast state
    is the int32 round number.
  """
  num_classes = model_spec.num_classes
  # Keras sub-models, built once per traced model (not per step); the list
  # holds the models themselves so that an identity match is never stale.
  feature_models = []

  def features_of(model):
    for known, extractor, classifier in feature_models:
      if known is model:
        return extractor, classifier
    feature_models.append((model, builders.feature_extractor(model),
                           builders.classifier_layer(model)))
    return feature_models[-1][1:]

  def prepare(client):
    teacher, dataset = client.teacher, client.train
    client_seed = _client_seed(seed, client.broadcast, client.client_index)
    feature_model = None
    dim = 1
    if options.feature_augmentation:
      feature_model, _ = features_of(teacher)
      dim = builders.feature_dim(teacher)
      features_of(client.model)
    stats = _teacher_statistics(feature_model, dataset, num_classes, dim)
    counts = stats['counts']
    context = collections.OrderedDict(
        seed=client_seed, activated=tf.cast(counts > 0, tf.float32),
        teacher=teacher)
    if options.feature_augmentation:
      context['noise_factor'] = noise_factor(
          pooled_covariance(stats['outer'], stats['class_sums'], counts))
      context['augment_probability'] = augmentation_probability(counts)
    if options.balanced_sampling:
      dataset = sampling.class_balanced(
          dataset, counts, batch_size,
          tf.random.experimental.stateless_fold_in(client_seed, 1))
    return local_training.Preparation(train=dataset, context=context,
                                      label_counts=counts)

  def augment(features, labels, context, step_seed):
    noise = tf.matmul(
        tf.random.stateless_normal(tf.shape(features), step_seed),
        context['noise_factor'], transpose_b=True)
    chosen = tf.random.stateless_uniform(
        tf.shape(labels), tf.random.experimental.stateless_fold_in(
            step_seed, 1)) < tf.gather(context['augment_probability'],
                                       labels)
    return features + tf.cast(chosen, features.dtype)[:, tf.newaxis] * noise

  def batch_loss(model, batch, context, examples_seen):
    x, y = batch['x'], batch['y']
    if options.feature_augmentation:
      feature_model, classifier = features_of(model)
      features = feature_model(x, training=True)
      logits = classifier(features)
      step_seed = tf.random.experimental.stateless_fold_in(
          context['seed'], examples_seen + 2)
      ce_logits = classifier(augment(features, y, context, step_seed))
    else:
      logits = model(x, training=True)
      ce_logits = logits
    if options.absent == 'batch':
      activated = tf.cast(
          tf.reduce_any(tf.one_hot(y, num_classes) > 0, axis=0), tf.float32)
    else:
      activated = context['activated']
    if options.knowledge_inheritance:
      per_example = balancefl_losses.activated_cross_entropy(
          y, ce_logits, activated)
      per_example += balancefl_losses.absent_class_distillation(
          logits, context['teacher'](x, training=False), 1.0 - activated,
          options.temperature)
    else:
      per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
          labels=y, logits=ce_logits)
    if options.smooth_regularization:
      per_example += options.smooth_weight * (
          balancefl_losses.activated_negative_entropy(logits, activated))
    return per_example, logits, ()

  needs = {local_training.CLIENT_INDEX}
  if options.knowledge_inheritance or options.feature_augmentation:
    needs.add(local_training.TEACHER)
  return local_training.LocalLoopPlugin(
      initial_broadcast=lambda: np.int32(0),
      needs=frozenset(needs),
      prepare=prepare,
      batch_loss=batch_loss,
      update_broadcast=lambda round_num, _: round_num + 1)


def build_balancefl(
    model_spec: spec_lib.ModelOrFactory,
    client_optimizer: tff.learning.optimizers.Optimizer,
    server_optimizer: tff.learning.optimizers.Optimizer,
    options: BalanceFLOptions,
    *,
    batch_size: int,
    seed: int = 0,
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
      A `ModelSpec`, or a no-argument Keras model factory whose last layer
      is a Dense `classifier` (`spec_lib.as_model_spec`).
    client_optimizer: local optimizer (the paper uses Adam, lr 0.005).
    server_optimizer: server optimizer on the averaged delta.
    options: BalanceFL's switches and hyperparameters.
    batch_size: the batch size of the resampled dataset (balanced sampling).
    seed: base seed of the client-side randomness.

  Returns:
    A `tff.learning.templates.LearningProcess` whose client data are
    `OrderedDict(train=dataset, client_index=one-element int32 dataset)`.
  """
  model_spec = spec_lib.as_model_spec(model_spec)
  return fedavg_family.build_local_training_process(
      model_spec, client_optimizer, server_optimizer,
      plugin=build_plugin(model_spec, options, batch_size=batch_size,
                          seed=seed))


def _build(model_spec, config, options, context):
  """BalanceFL (003): self-balancing local updates on FedAvg."""
  del context  # Unused.
  return build_balancefl(model_spec, config.client_optimizer(),
                         config.server_sgd(), options,
                         batch_size=config.batch_size, seed=model_spec.seed)


BALANCEFL = method.Method('balancefl', _build, BalanceFLOptions,
                          local_loss=method.LocalLoss.OWN)
