"""RedGrape (Yang et al., "Decentralized Decoupled Training for Federated
Long-Tailed Learning", TMLR 2024; seeds/004) as a LearningProcess.

FedAvg over a two-stream model (`models.two_stream`) whose clients re-balance
the classifier W with local balanced data and global gradient prototypes; the
process's model weights, what the runner evaluates and saves, are the plain
model's: P and W, without W_hat (eq. 16).

The shared loop (`local_training`) already trains every parameter of the
two-stream model on the instance-balanced local loss with logits
z = W^T h + W_hat^T h (eq. 7) and gives W its local gradient g_local
(eq. 8). RedGrape adds, through a `LocalLoopPlugin` (004 Algorithm 1):

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
import dataclasses

import tensorflow as tf

from tff_imbalance import compat
from tff_imbalance import losses
from tff_imbalance.learning import classifier_gradients
from tff_imbalance.learning import method
from tff_imbalance.learning import options as options_lib
from tff_imbalance.learning.aggregators import class_mean
from tff_imbalance.learning.algorithms import fedavg_family
from tff_imbalance.learning.client_work import local_training
from tff_imbalance.models import builders
from tff_imbalance.models import spec as spec_lib
from tff_imbalance.models import two_stream

tff = compat.tff


@dataclasses.dataclass(frozen=True)
class RedGrapeOptions:
  """RedGrape's re-balancing (004; appendix C.2 and the reference code)."""
  FLAG_PREFIX = 'redgrape_'
  rebalance_strength: float = options_lib.option(
      0.1, 'RedGrape re-balancing strength lambda >= 0 (004 eq. 13); 0 is '
      'FedAvg with a two-stream head.', flag='redgrape_lambda')
  threshold: int = options_lib.option(
      8, 'RedGrape T >= 1: a class enters the local balanced set with T '
      'random samples when the client holds at least T (004 eq. 9).')

  def __post_init__(self):
    options_lib.require(self, 'rebalance_strength',
                        self.rebalance_strength >= 0, '>= 0')
    options_lib.require(self, 'threshold', self.threshold >= 1, '>= 1')


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

  The definition, from per-class values; the local loop computes the same
  sum as `balanced_part` + `prototype_part` (tested equal), without the
  per-class [C, d, C] tensor at every step.

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


def prototype_part(eligible: tf.Tensor, prototypes: collections.OrderedDict,
                   num_classes: int) -> collections.OrderedDict:
  """Eq. 12's prototype term, (1/C) sum_{c not in L^bal_k} g_pro_c.

  Fixed for a client's round (the prototypes and L^bal_k are), so it is
  taken once in `prepare`, not at every step: the [C, d, C] prototypes are
  read once per round.
  """
  from_prototypes = prototypes[class_mean.MASK] * (1.0 - eligible)
  return tf.nest.map_structure(
      lambda proto: tf.tensordot(from_prototypes, proto, 1) / num_classes,
      prototypes[class_mean.VALUES])


def balanced_part(features: tf.Tensor, labels: tf.Tensor, kernel: tf.Tensor,
                  bias: tf.Tensor, threshold: int,
                  num_classes: int) -> collections.OrderedDict:
  """Eq. 12's balanced-set term, (1/C) sum_{c in L^bal_k} g_bal_c.

  Every class of the (compacted) balanced set has exactly T examples, so
  the sum over its classes of the per-class mean gradients is the sum of
  all its examples' gradients over T: one [d, N] x [N, C] matmul
  (`classifier_gradients.mean_gradients` times N / T) instead of the
  [C, d, C] per-class tensor, C times fewer multiply-adds at every step.

  Args:
    features: [N, d] features of the balanced set's N = |L^bal_k| T
      examples (only eligible classes).
    labels: [N] their labels.
    kernel: [d, C] classifier kernel W.
    bias: [C] classifier bias b.
    threshold: T.
    num_classes: C.

  Returns:
    `OrderedDict(kernel=[d, C], bias=[C])`.
  """
  kernel_mean, bias_mean = classifier_gradients.mean_gradients(
      features, labels, kernel, bias, num_classes)
  scale = tf.cast(tf.shape(features)[0], features.dtype) / float(
      threshold * num_classes)
  return collections.OrderedDict(kernel=kernel_mean * scale,
                                 bias=bias_mean * scale)


def compact_balanced_set(selected: collections.OrderedDict,
                         threshold: int) -> collections.OrderedDict:
  """The eligible classes' slots of `select_balanced_set`'s result only.

  The forward pass at every step then covers |L^bal_k| T examples, not
  C T (on FEMNIST a writer holds T examples of a few of the 62 classes).
  """
  keep = tf.repeat(selected['eligible'] > 0, threshold)
  return collections.OrderedDict(x=tf.boolean_mask(selected['x'], keep),
                                 y=tf.boolean_mask(selected['y'], keep))


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


def build_plugin(
    plain_spec: spec_lib.ModelSpec, *, learning_rate: float,
    rebalance_strength: float, threshold: int, local_epochs: int,
    loss: losses.PerExampleLoss = losses.cross_entropy,
) -> local_training.LocalLoopPlugin:
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
    A `LocalLoopPlugin` whose broadcast state is the global prototypes.
  """
  num_classes = plain_spec.num_classes
  feature_dim = builders.feature_dim(plain_spec.build_keras())

  def prepare(client):
    # Eq. 11 needs only the received model; the balanced set only labels.
    selected = select_balanced_set(client.train, num_classes, threshold,
                                   local_epochs, plain_spec.input_shape)
    return local_training.Preparation(
        report=classifier_gradients.model_class_gradients(
            client.model, client.train, num_classes),
        context=collections.OrderedDict(
            prototypes=client.broadcast,
            balanced=compact_balanced_set(selected, threshold),
            from_prototypes=prototype_part(selected['eligible'],
                                           client.broadcast, num_classes)))

  def batch_loss(model, batch, context, examples_seen):
    """The step's loss, and its g_bal for `rebalance` after the step."""
    del examples_seen  # Unused.
    # Eq. 9 at the step's own P^{i-1} and W^{i-1}, as g_local (eq. 8); eq.
    # 12 as `rebalancing_gradients` states it, in the cheaper form of
    # `balanced_part` + `prototype_part`.
    balanced = context['balanced']
    classifier = builders.classifier_layer(model)

    def from_balanced_set():
      features = builders.feature_extractor(model)(balanced['x'],
                                                   training=False)
      return balanced_part(tf.stop_gradient(features), balanced['y'],
                           classifier.kernel, classifier.bias, threshold,
                           num_classes)

    def without_balanced_set():
      return tf.nest.map_structure(tf.zeros_like, context['from_prototypes'])

    # A client holding no class T times has an empty balanced set: no
    # forward pass (TF's CPU convolutions reject an empty batch).
    g_bal = tf.nest.map_structure(
        tf.add,
        tf.cond(tf.size(balanced['y']) > 0, from_balanced_set,
                without_balanced_set),
        context['from_prototypes'])
    logits = model(batch['x'], training=True)
    return loss(batch['y'], logits, context['prototypes']), logits, g_bal

  def rebalance(model, gradients, context, g_bal):
    del context  # Used before the step, in `batch_loss`.
    classifier = builders.classifier_layer(model)
    position = {v.ref(): i for i, v in enumerate(model.trainable_variables)}
    g_local = collections.OrderedDict(
        kernel=gradients[position[classifier.kernel.ref()]],
        bias=gradients[position[classifier.bias.ref()]])
    # Round 1 too: eq. 12 then has the balanced-set part alone (no class has
    # a prototype yet), which the norm matching scales like any other g_bal.
    step = _norm_matched(g_bal, g_local)
    for name, variable in (('kernel', classifier.kernel),
                           ('bias', classifier.bias)):
      variable.assign_sub(learning_rate * rebalance_strength * step[name])

  return local_training.LocalLoopPlugin(
      initial_broadcast=lambda: classifier_gradients.zero_prototypes(
          feature_dim, num_classes),
      prepare=prepare,
      batch_loss=batch_loss,
      after_step=rebalance,
      report_factory=class_mean.FieldFactory('extension',
                                             class_mean.ClassMeanFactory()),
      update_broadcast=lambda broadcast, global_prototypes: global_prototypes)


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
    model_spec: spec_lib.ModelOrFactory,
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
      A `ModelSpec`, or a no-argument Keras model factory whose last layer
      is a Dense `classifier` (`spec_lib.as_model_spec`).
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
  model_spec = spec_lib.as_model_spec(model_spec)
  two_stream_spec = two_stream.TwoStreamSpec.of(model_spec)
  plugin = build_plugin(
      model_spec, learning_rate=learning_rate,
      rebalance_strength=rebalance_strength, threshold=threshold,
      local_epochs=local_epochs)
  process = fedavg_family.build_local_training_process(
      two_stream_spec, client_optimizer, server_optimizer, plugin=plugin)
  return with_plain_model_weights(process, two_stream_spec)


def _build(model_spec, config, options, context):
  """RedGrape (004): two-stream head, classifier re-balancing (Alg. 1)."""
  del context  # Unused.
  return build_redgrape(
      model_spec, config.client_optimizer(), config.server_sgd(),
      learning_rate=config.client_lr,
      rebalance_strength=options.rebalance_strength,
      threshold=options.threshold, local_epochs=config.local_epochs)


REDGRAPE = method.Method('redgrape', _build, RedGrapeOptions,
                         local_loss=method.LocalLoss.OWN)
