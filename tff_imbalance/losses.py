"""Per-example classification losses on logits: pure TF, unit-tested.

Every loss here has the signature `loss(labels, logits, broadcast) -> [B]`:
labels int64 [B], logits float32 [B, C], and `broadcast` the algorithm's
extra server state sent to clients this round (class weights, priors, ...;
`()` when the algorithm has none). The shared local loop averages the
per-example values over the batch, so a loss never decides the reduction.
"""

from typing import Any, Callable, Sequence, Union

import numpy as np
import tensorflow as tf

from tff_imbalance import errors

PerExampleLoss = Callable[[tf.Tensor, tf.Tensor, Any], tf.Tensor]

# Below this, (1 - p_t)^gamma is 0 in float32 for gamma >= 2 anyway; the floor
# keeps d/dp (1 - p)^gamma finite for 0 < gamma < 1 when p_t rounds to 1.
_MIN_ONE_MINUS_PT = 1e-12


def cross_entropy(labels: tf.Tensor, logits: tf.Tensor,
                  broadcast: Any = ()) -> tf.Tensor:
  """Softmax cross-entropy -log p_y per example."""
  del broadcast  # Plain CE needs no server state.
  return tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=labels, logits=logits)


def focal_loss(gamma: float = 2.0,
               alpha: Union[float, Sequence[float]] = 1.0) -> PerExampleLoss:
  """Fed-Focal's loss -alpha_t (1 - p_t)^gamma log p_t (000 eqs. 4 and 6).

  p_t is the softmax probability of the true class and alpha_t the weight of
  the example's class (a scalar for every class, or one weight per class).
  gamma = 0 and alpha = 1 is cross-entropy. Computed from log-softmax, with
  1 - p_t = -expm1(log p_t) kept away from 0 so that neither the loss nor its
  gradient turns NaN when p_t -> 0 or 1 (logits of +-1e4 included).

  Args:
    gamma: focusing parameter >= 0 (the paper's default 2).
    alpha: class weight: a scalar, or a sequence of C per-class weights.

  Returns:
    A per-example loss `(labels, logits, broadcast) -> [B]`.

  Raises:
    errors.UserInputError: if gamma < 0 or an alpha is not positive.
  """
  if not gamma >= 0:
    raise errors.UserInputError(
        f'--focal_gamma must be >= 0 (got {gamma}); 0 is cross-entropy.')
  alpha_values = np.atleast_1d(np.asarray(alpha, np.float32))
  if alpha_values.ndim != 1 or not np.all(alpha_values > 0):
    raise errors.UserInputError(
        f'--focal_alpha must be one positive number or one per class '
        f'(got {alpha}).')
  per_class = alpha_values.size > 1

  def loss(labels, logits, broadcast=()):
    del broadcast  # Focal loss needs no server state.
    log_probs = tf.nn.log_softmax(logits)
    log_pt = tf.gather(log_probs, labels, axis=-1, batch_dims=1)
    one_minus_pt = tf.maximum(-tf.math.expm1(log_pt), _MIN_ONE_MINUS_PT)
    modulating = tf.pow(one_minus_pt, gamma)
    alpha_t = (tf.gather(tf.constant(alpha_values), labels) if per_class else
               tf.constant(alpha_values[0]))
    return -alpha_t * modulating * log_pt

  return loss


RATIO_WEIGHTINGS = ('per_example', 'as_coded')


def ratio_loss(weighting: str = 'per_example') -> PerExampleLoss:
  """Ratio Loss (002 eq. 11): (alpha + beta Ra_y) * CE, weights broadcast.

  `broadcast` is the [C] vector of class weights alpha + beta Ra_i that the
  server computed from the model the client received. 'per_example' weights
  each example by its own class, as the paper says; 'as_coded' reproduces the
  reference code (NOTES.md sec. 2: an (N,) by (N, 1) broadcast), whose batch
  mean is mean_batch(w_y) * mean_batch(CE).

  Args:
    weighting: 'per_example' or 'as_coded'.

  Returns:
    A per-example loss `(labels, logits, class_weights) -> [B]`.

  Raises:
    errors.UserInputError: for another weighting.
  """
  if weighting not in RATIO_WEIGHTINGS:
    raise errors.UserInputError(
        f'--ratio_weighting must be one of {", ".join(RATIO_WEIGHTINGS)} '
        f'(got {weighting!r}).')

  def loss(labels, logits, broadcast):
    weights = tf.gather(tf.convert_to_tensor(broadcast, tf.float32), labels)
    if weighting == 'as_coded':
      weights = tf.fill(tf.shape(weights), tf.reduce_mean(weights))
    return weights * cross_entropy(labels, logits)

  return loss


def log_prior(class_counts: tf.Tensor) -> tf.Tensor:
  """log n_c per class, zero counts replaced by 1 (log 1 = 0) as FedETF does.

  The constant log N of a normalised prior is left out: softmax is invariant
  to adding one constant to every logit.
  """
  counts = tf.cast(class_counts, tf.float32)
  return tf.math.log(tf.maximum(counts, 1.0))


def balanced_softmax(labels: tf.Tensor, logits: tf.Tensor,
                     broadcast: Any) -> tf.Tensor:
  """Balanced Softmax (Ren et al., NeurIPS 2020, eq. 4): -log softmax(z + log pi)_y.

  `broadcast` is the [C] log prior log pi (see `log_prior`): the client's own
  label counts (FedETF's federated form) or the global training counts
  (BalanceFL's centralized baseline). Training with the prior added to the
  logits makes the plain logits z estimate the balanced posterior.
  """
  prior = tf.convert_to_tensor(broadcast, tf.float32)
  return cross_entropy(labels, logits + prior)


def squared_error(labels: tf.Tensor, logits: tf.Tensor,
                  broadcast: Any = ()) -> tf.Tensor:
  """1/2 sum_n (softmax(z)_n - e_{y,n})^2 per example: the MSE loss of Wang
  et al. (IJCNN 2016, eq. 1) on the softmax outputs, 002's MSE baseline."""
  del broadcast  # Plain MSE needs no server state.
  num_classes = tf.shape(logits)[-1]
  error = tf.nn.softmax(logits) - tf.one_hot(labels, num_classes,
                                             dtype=logits.dtype)
  return 0.5 * tf.reduce_sum(tf.square(error), axis=-1)


def mean_false_error(squared: bool = False) -> PerExampleLoss:
  """MFE (or MSFE) of Wang et al. 2016, eqs. 3-6, over a batch.

  With the classes split into minority (`broadcast[c]` = 1, Wang's positive
  class) and majority (0), and l_i the squared error of example i
  (`squared_error`):

    FNE = mean of l_i over the batch's minority examples,
    FPE = mean of l_i over its majority examples,
    MFE = FPE + FNE,    MSFE = FPE^2 + FNE^2,

  a group without examples in the batch contributing 0. Returned per
  example so that the loop's batch mean is MFE (MSFE): example i of group g
  gets (B / n_g) l_i (times mean_g l for MSFE, not stopped: the gradient of
  FNE^2 is 2 FNE grad FNE).

  Args:
    squared: MSFE instead of MFE.

  Returns:
    A per-example loss `(labels, logits, minority_mask [C]) -> [B]`.
  """

  def loss(labels, logits, broadcast):
    errors_ = squared_error(labels, logits)
    minority = tf.gather(tf.convert_to_tensor(broadcast, logits.dtype),
                         labels)  # [B] 1.0 for minority examples
    batch = tf.cast(tf.size(labels), logits.dtype)
    weights = tf.zeros_like(errors_)
    for member in (minority, 1.0 - minority):
      count = tf.reduce_sum(member)
      group_weight = tf.math.divide_no_nan(batch, count) * member
      if squared:
        group_mean = tf.math.divide_no_nan(tf.reduce_sum(member * errors_),
                                           count)
        group_weight *= group_mean
      weights += group_weight
    return weights * errors_

  return loss


class KerasLoss(tf.keras.losses.Loss):
  """A per-example loss as a Keras loss (batch mean), for TFF's own builders."""

  def __init__(self, per_example_loss: PerExampleLoss, name: str = 'loss'):
    super().__init__(name=name)
    self._per_example_loss = per_example_loss

  def call(self, y_true, y_pred):
    labels = tf.cast(tf.reshape(y_true, [-1]), tf.int64)
    return self._per_example_loss(labels, y_pred, ())
