"""RedGrape's client side (004 Algorithm 1) as hooks of the shared local loop.

The shared loop (`local_training`) already trains every parameter of the
two-stream model (`models.two_stream`) on the instance-balanced local loss
with logits z = W^T h + W_hat^T h (eq. 7) and gives W its local gradient
g_local (eq. 8). RedGrape adds, through a `ClientWorkExtension`:

1. before training, the client's local gradient prototypes on the received
   model (eq. 11): per-class closed-form gradients of W (and b) over all its
   examples of that class, with logits W^T h + b only, and a presence mask;
   they are averaged per class over the round's holders inside the client
   work (`aggregators.class_mean`, eq. 15) and broadcast next round;
2. the local balanced set D^bal_k: T examples of each class the client holds
   at least T times (eq. 9), the first T of that class in this round's seeded
   shuffle of the client's data, so they change across rounds;
3. at every local step, before the optimizer step, the re-balancing gradient
   (eq. 12) at the step's own P^{i-1} and W^{i-1} (eq. 9)

     g_bal = (1/C) (sum_{c in L^bal_k} g_bal_c + sum_{c not in L^bal_k} g_pro_c)

   with g_bal_c the closed-form gradient of W on the balanced examples of c
   and g_pro_c the global prototype (zero for a class nobody has held yet,
   so in round 1 g_bal is the balanced-set part alone); after the optimizer
   step, g_bal is rescaled to the norm of g_local, one norm over W's kernel
   and bias together, and applied as a plain extra step
   W <- W - eta_l lambda g_bal ||g_local|| / ||g_bal|| (eq. 13).

The features of the balanced set are taken in inference mode (no dropout),
as W is used at inference (eq. 16).
"""

import collections

import tensorflow as tf

from tff_imbalance import losses
from tff_imbalance.learning import classifier_gradients
from tff_imbalance.learning.aggregators import class_mean
from tff_imbalance.learning.client_work import local_training
from tff_imbalance.models import builders
from tff_imbalance.models import spec as spec_lib


def select_balanced_set(dataset: tf.data.Dataset, num_classes: int,
                        threshold: int, local_epochs: int,
                        input_shape) -> collections.OrderedDict:
  """The local balanced set D^bal_k of eq. 9, in one pass over `dataset`.

  Args:
    dataset: the client's batched round dataset ('x', 'y'), i.e. its data
      shuffled (seeded per round) and repeated `local_epochs` times.
    num_classes: C.
    threshold: T.
    local_epochs: how many times `dataset` repeats the client's data.
    input_shape: the shape of one example.

  Returns:
    `OrderedDict(x=[C*T, ...], y=[C*T] int64, eligible=[C] float32)`: slot
    c*T + i holds the i-th example of class c in the dataset's order;
    `eligible[c]` = 1.0 where the client holds at least T examples of c (its
    slots are then T distinct examples from the first pass over the data).
  """
  x_slots = tf.zeros([num_classes * threshold, *input_shape], tf.float32)
  seen = tf.zeros([num_classes], tf.int32)
  for batch in iter(dataset):
    labels = tf.cast(batch['y'], tf.int32)
    member = tf.one_hot(labels, num_classes, dtype=tf.int32)
    earlier_in_batch = tf.reduce_sum(
        tf.cumsum(member, axis=0, exclusive=True) * member, axis=1)
    rank = tf.gather(seen, labels) + earlier_in_batch
    keep = rank < threshold
    slots = tf.boolean_mask(labels * threshold + rank, keep)
    x_slots = tf.tensor_scatter_nd_update(
        x_slots, slots[:, None], tf.boolean_mask(batch['x'], keep))
    seen += tf.reduce_sum(member, axis=0)
  return collections.OrderedDict(
      x=x_slots,
      y=tf.repeat(tf.range(num_classes, dtype=tf.int64), threshold),
      eligible=tf.cast(seen >= threshold * local_epochs, tf.float32))


def rebalancing_gradients(local: collections.OrderedDict,
                          eligible: tf.Tensor,
                          prototypes: collections.OrderedDict,
                          num_classes: int) -> collections.OrderedDict:
  """Eq. 12: balanced-set gradients where held, global prototypes elsewhere.

  Args:
    local: per-class gradient values on the balanced set
      (`OrderedDict(kernel=[C, d, C], bias=[C, C])`).
    eligible: [C] 1.0 for the classes of L^bal_k.
    prototypes: the broadcast global prototypes (`values` and `mask`).
    num_classes: C, the size of the whole label set L.

  Returns:
    `OrderedDict(kernel=[d, C], bias=[C])`, g_bal.
  """
  from_prototypes = prototypes[class_mean.MASK] * (1.0 - eligible)
  return tf.nest.map_structure(
      lambda real, proto: (tf.tensordot(eligible, real, 1) + tf.tensordot(
          from_prototypes, proto, 1)) / num_classes, local,
      prototypes[class_mean.VALUES])


def _norm_matched(g_bal, g_local):
  """Eq. 13: g_bal rescaled to the norm of the local gradient.

  W is one parameter vector in eq. 13 (the paper omits the bias, footnote
  5), so with a bias both norms run over kernel and bias together: one
  ratio for the whole classifier, which keeps the direction of g_bal.

  Args:
    g_bal: the re-balancing gradient (a tensor or a structure of them).
    g_local: the local batch gradient, of the same structure.

  Returns:
    g_bal * ||g_local|| / ||g_bal|| (zero where g_bal is zero).
  """
  ratio = tf.math.divide_no_nan(
      tf.linalg.global_norm(tf.nest.flatten(g_local)),
      tf.linalg.global_norm(tf.nest.flatten(g_bal)))
  return tf.nest.map_structure(lambda g: g * ratio, g_bal)


def build_redgrape_extension(
    plain_spec: spec_lib.ModelSpec, *, learning_rate: float,
    rebalance_strength: float, threshold: int, local_epochs: int,
    loss: losses.PerExampleLoss = losses.cross_entropy,
) -> local_training.ClientWorkExtension:
  """RedGrape's additions to the shared local loop (see module docstring).

  Args:
    plain_spec: the inference model (features and W); the loop trains its
      two-stream version.
    learning_rate: the local learning rate eta_l of eq. 13.
    rebalance_strength: lambda >= 0 (eq. 13).
    threshold: T >= 1 (eq. 9).
    local_epochs: how many times each client's round dataset repeats its data.
    loss: the local per-example loss of eq. 7 (the loop's own loss).

  Returns:
    A `ClientWorkExtension` whose broadcast state is the global prototypes.
  """
  num_classes = plain_spec.num_classes
  feature_dim = builders.feature_dim(plain_spec.build_keras())

  def local_prototypes(model, dataset, broadcast):
    del broadcast  # Eq. 11 needs only the received model.
    return classifier_gradients.model_class_gradients(model, dataset,
                                                      num_classes)

  def prepare_training(model, teacher, dataset, broadcast):
    del model, teacher, broadcast  # The balanced set depends on labels only.
    balanced = select_balanced_set(dataset, num_classes, threshold,
                                   local_epochs, plain_spec.input_shape)
    return dataset, None, balanced

  # The step's g_bal: computed in `batch_loss`, before the optimizer moves P
  # and W, and applied in `after_step` of the same loop iteration (the same
  # trace of the loop body), which the loop offers no other way to pass.
  step_gradient = {}

  def batch_loss(model, teacher, batch, broadcast, balanced, examples_seen):
    del teacher, examples_seen  # Unused.
    # Eq. 9 at the step's own P^{i-1} and W^{i-1}, as g_local (eq. 8).
    classifier = builders.classifier_layer(model)
    features = builders.feature_extractor(model)(balanced['x'],
                                                 training=False)
    real = classifier_gradients.class_mean_gradients(
        tf.stop_gradient(features), balanced['y'], classifier.kernel,
        classifier.bias, num_classes)[class_mean.VALUES]
    step_gradient['g_bal'] = rebalancing_gradients(
        real, balanced['eligible'], broadcast, num_classes)
    logits = model(batch['x'], training=True)
    return loss(batch['y'], logits, broadcast), logits

  def rebalance(model, gradients, broadcast, balanced):
    del broadcast, balanced  # Used before the step, in `batch_loss`.
    classifier = builders.classifier_layer(model)
    position = {v.ref(): i for i, v in enumerate(model.trainable_variables)}
    g_local = collections.OrderedDict(
        kernel=gradients[position[classifier.kernel.ref()]],
        bias=gradients[position[classifier.bias.ref()]])
    # Round 1 too: eq. 12 then has the balanced-set part alone (no class has
    # a prototype yet), which the norm matching scales like any other g_bal.
    step = _norm_matched(step_gradient['g_bal'], g_local)
    for name, variable in (('kernel', classifier.kernel),
                           ('bias', classifier.bias)):
      variable.assign_sub(learning_rate * rebalance_strength * step[name])

  return local_training.ClientWorkExtension(
      initial_broadcast=lambda: classifier_gradients.zero_prototypes(
          feature_dim, num_classes),
      client_report=local_prototypes,
      report_before_training=True,
      report_factory=class_mean.FieldFactory('extension',
                                             class_mean.ClassMeanFactory()),
      update_broadcast=lambda broadcast, global_prototypes: global_prototypes,
      prepare_training=prepare_training,
      batch_loss=batch_loss,
      after_step=rebalance)
