"""CReFF (Shang et al., "Federated Learning on Heterogeneous and Long-Tailed
Data via Classifier Re-Training with Federated Features", IJCAI 2022) as a
LearningProcess.

Clients run FedAvg's local training (the shared loop) and, on the model they
receive, report their per-class real gradients of the classifier (closed form,
`learning.classifier_gradients`), computed with the received backbone and the
server's re-trained classifier. Inside the client work the server averages
them per class over the clients holding the class
(`aggregators.class_mean`), optimises its federated features so that their
classifier gradients match the real ones, and re-trains a fresh classifier on
the features by mini-batch SGD (`CReFFServerFactory`). The global model keeps
training with the FedAvg classifier; evaluation uses the backbone with the
re-trained classifier, which is what the process's `get_model_weights`
returns.
"""

import collections
import dataclasses

import numpy as np
import tensorflow as tf

from tff_imbalance import compat
from tff_imbalance.learning import classifier_gradients
from tff_imbalance.learning import method
from tff_imbalance.learning import options as options_lib
from tff_imbalance.learning.aggregators import class_mean
from tff_imbalance.learning.algorithms import fedavg_family
from tff_imbalance.learning.client_work import local_training
from tff_imbalance.models import builders
from tff_imbalance.models import spec as spec_lib

tff = compat.tff

# Distance guard of the per-row cosine, as in dataset condensation's
# `distance_wb`, which CReFF's code uses.
_COSINE_EPSILON = 1e-6
# Second word of the re-training's stateless seed (the features use 7).
_RETRAIN_SEED_TAG = 8
# How the re-trained classifier starts each round (`CReFFOptions.retrain_init`).
RETRAIN_INITS = ('fresh', 'zero')


@dataclasses.dataclass(frozen=True)
class CReFFOptions:
  """CReFF's server-side hyperparameters (defaults: the CReFF code).

  Attributes:
    features_per_class: federated features per class m (100).
    match_steps: gradient-matching steps per round (100).
    feature_lr: SGD learning rate of the features (0.1).
    retrain_epochs: epochs of mini-batch SGD re-training per round (300,
      the code's `crt_epoch`; 004 appendix C.2 calls them "steps").
    retrain_steps: if > 0, re-train for exactly this many mini-batch SGD
      updates instead of `retrain_epochs` epochs (004 appendix C.2's reading:
      300 updates; 0, the default, keeps the code's epochs).
    retrain_batch_size: re-training mini-batch size (32, the code's
      `batch_size_local_training`); >= C*m is full-batch gradient descent.
    retrain_lr: re-training learning rate (0.01, the code's `lr_net`; 004
      appendix C.2 and RG use the local learning rate).
    retrain_init: 'fresh' (a new seeded classifier each round, as the code's
      new `nn.Linear`) or 'zero' (this project's earlier choice).
  """
  FLAG_PREFIX = 'creff_'
  features_per_class: int = options_lib.option(
      100, 'CReFF federated features per class (>= 1).')
  match_steps: int = options_lib.option(
      100, 'CReFF gradient-matching steps per round (>= 1).')
  feature_lr: float = options_lib.option(
      0.1, 'CReFF learning rate of the federated features (> 0).')
  retrain_epochs: int = options_lib.option(
      300, 'CReFF classifier re-training epochs of mini-batch SGD over the '
      'federated features per round (>= 1).',
      applies_if=(lambda options: options.retrain_steps == 0,
                  '--creff_retrain_steps=0'))
  retrain_steps: int = options_lib.option(
      0, 'CReFF classifier re-training length in mini-batch SGD updates per '
      'round, replacing --creff_retrain_epochs when > 0 (004 appendix C.2 '
      'reads "300 re-training steps"; 0: the CReFF code\'s epochs).')
  retrain_batch_size: int = options_lib.option(
      32, 'CReFF re-training mini-batch size (>= 1; at least classes x '
      '--creff_features_per_class is full-batch).')
  retrain_lr: float = options_lib.option(
      0.01, 'CReFF classifier re-training learning rate (> 0; the CReFF '
      'code: 0.01; 004 appendix C.2: --client_lr).')
  retrain_init: str = options_lib.option(
      'fresh', 'CReFF re-trained classifier start each round: a fresh seeded '
      'nn.Linear-style draw (the CReFF code) or zero.', choices=RETRAIN_INITS)

  def __post_init__(self):
    for name in ('features_per_class', 'match_steps', 'retrain_epochs',
                 'retrain_batch_size'):
      options_lib.require(self, name, getattr(self, name) >= 1, '>= 1')
    options_lib.require(self, 'retrain_steps', self.retrain_steps >= 0,
                        '>= 0')
    options_lib.require(self, 'feature_lr', self.feature_lr > 0, '> 0')
    options_lib.require(self, 'retrain_lr', self.retrain_lr > 0, '> 0')
    options_lib.check_choices(self)


def feature_labels(num_classes: int, features_per_class: int) -> tf.Tensor:
  """Labels of the federated features: m of class 0, then m of class 1..."""
  return tf.repeat(tf.range(num_classes, dtype=tf.int64), features_per_class)


def matching_loss(features: tf.Tensor, classifier: collections.OrderedDict,
                  real_kernel_gradients: tf.Tensor,
                  matched: tf.Tensor) -> tf.Tensor:
  """CReFF's gradient-matching loss (Shang et al. 2022, eq. 6).

  sum_{c matched} sum_k [1 - cos(g_real[c][:, k], g_syn[c][:, k])], with
  g_syn[c] the mean classifier-kernel gradient over the features of class c
  and k running over the classifier's output units (the rows of the PyTorch
  weight: the reference's per-row cosine; the bias does not count there).

  Args:
    features: [C*m, d] federated features, m per class in the order of
      `feature_labels`.
    classifier: `OrderedDict(kernel=[d, C], bias=[C])`.
    real_kernel_gradients: [C, d, C] aggregated real gradients.
    matched: [C] 1.0 for classes with real gradients this round.

  Returns:
    The scalar loss.
  """
  num_classes = real_kernel_gradients.shape[0]
  synthetic = classifier_gradients.block_class_mean_gradients(
      features, classifier['kernel'], classifier['bias'],
      num_classes)['kernel']
  dot = tf.reduce_sum(synthetic * real_kernel_gradients, axis=1)
  norms = (tf.norm(synthetic, axis=1) * tf.norm(real_kernel_gradients, axis=1)
           + _COSINE_EPSILON)
  return tf.reduce_sum(matched[:, None] * (1.0 - dot / norms))


def match_features(features, classifier, real_kernel_gradients, matched,
                   steps: int, learning_rate: float):
  """`steps` SGD steps on the features that decrease `matching_loss`.

  Returns:
    `(new_features, loss_before, loss_after)`.
  """

  def loss_and_gradient(current):
    with tf.GradientTape() as tape:
      tape.watch(current)
      loss = matching_loss(current, classifier, real_kernel_gradients,
                           matched)
    return loss, tape.gradient(loss, current)

  loss_before, _ = loss_and_gradient(features)
  for _ in tf.range(steps):
    _, gradient = loss_and_gradient(features)
    features = features - learning_rate * gradient
  loss_after, _ = loss_and_gradient(features)
  return features, loss_before, loss_after


def fresh_classifier(feature_dim: int, num_classes: int,
                     seed: tf.Tensor) -> collections.OrderedDict:
  """A new linear classifier drawn as PyTorch's `nn.Linear` default.

  Kernel and bias ~ U(-1/sqrt(d), 1/sqrt(d)) (`nn.Linear`'s Kaiming-uniform
  with a = sqrt(5), and its bias bound), from stateless draws so that the
  same seed gives the same classifier.

  Args:
    feature_dim: d.
    num_classes: C.
    seed: a shape-[2] int32 stateless seed.

  Returns:
    `OrderedDict(kernel=[d, C], bias=[C])`.
  """
  bound = 1.0 / np.sqrt(feature_dim)
  kernel_seed, bias_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))
  return collections.OrderedDict(
      kernel=tf.random.stateless_uniform([feature_dim, num_classes],
                                         kernel_seed, -bound, bound),
      bias=tf.random.stateless_uniform([num_classes], bias_seed, -bound,
                                       bound))


def epoch_order(num_examples: int, seed: tf.Tensor,
                epoch: tf.Tensor) -> tf.Tensor:
  """The re-training's example order in `epoch`: a stateless permutation."""
  return tf.random.experimental.stateless_shuffle(
      tf.range(num_examples),
      tf.random.experimental.stateless_fold_in(seed, epoch))


def _sgd_step(weights: tf.Tensor, inputs: tf.Tensor, targets: tf.Tensor,
              step_size: tf.Tensor) -> tf.Tensor:
  """One SGD step of mean CE on a mini-batch, kernel and bias as one [d+1, C]
  matrix on inputs with a trailing 1 (`classifier_gradients.mean_gradients`
  in 5 ops: the re-training's steps are many and tiny, so ops count)."""
  error = tf.nn.softmax(tf.matmul(inputs, weights)) - targets
  return weights - step_size * tf.matmul(inputs, error, transpose_a=True)


def retrain_classifier(features, labels, initial: collections.OrderedDict,
                       *, epochs: int, batch_size: int, learning_rate: float,
                       seed: tf.Tensor,
                       steps: int = 0) -> collections.OrderedDict:
  """Mini-batch SGD on mean CE over the federated features (Shang eq. 7).

  Each epoch visits the N = C*m features once in the order
  `epoch_order(N, seed, epoch)`, in ceil(N / batch_size) mini-batches (the
  last one smaller, as a PyTorch `DataLoader` without `drop_last`), one
  plain SGD step per mini-batch: epochs * ceil(N / batch_size) updates in
  all, i.e. epochs * m / batch_size per class (938 at CReFF's 300 epochs,
  m = 100, batch 32), each a [B, d+1] x [d+1, C] matmul and its transpose.
  With `steps` > 0 it takes exactly `steps` updates instead (004 appendix
  C.2's reading, "300 re-training steps"), walking the same epoch orders and
  stopping inside an epoch where the budget ends.
  The epoch's shuffled features are gathered once and cut into a [steps, B,
  d+1] stack, so that a step is a handful of ops (its cost is op overhead,
  not arithmetic: about 60,000 steps per round at C = 62).

  Args:
    features: [N, d] federated features.
    labels: their [N] labels.
    initial: the starting `OrderedDict(kernel=[d, C], bias=[C])`.
    epochs: passes over the features.
    batch_size: mini-batch size (>= N: full-batch gradient descent).
    learning_rate: SGD learning rate.
    seed: a shape-[2] int32 stateless seed of the epochs' orders.
    steps: if > 0, the number of SGD updates, replacing `epochs`.

  Returns:
    The re-trained `OrderedDict(kernel=[d, C], bias=[C])`.
  """
  num_examples, feature_dim = features.shape
  num_classes = initial['bias'].shape[0]
  batch_size = min(batch_size, num_examples)
  full_batches, rest = divmod(num_examples, batch_size)
  inputs = tf.concat([features, tf.ones([num_examples, 1], features.dtype)],
                     axis=1)
  targets = tf.one_hot(labels, num_classes, dtype=features.dtype)
  weights = tf.concat([initial['kernel'], initial['bias'][None, :]], axis=0)
  full_step = tf.constant(learning_rate / batch_size, features.dtype)
  rest_step = tf.constant(learning_rate / max(rest, 1), features.dtype)
  cut = full_batches * batch_size

  def one_epoch(weights, epoch, batches, with_rest):
    # The epoch's first `batches` full mini-batches (and its smaller last
    # one if `with_rest`) in the epoch's seeded order.
    order = epoch_order(num_examples, seed, epoch)
    epoch_inputs = tf.gather(inputs, order)
    epoch_targets = tf.gather(targets, order)
    batched_inputs = tf.reshape(epoch_inputs[:cut],
                                [full_batches, batch_size, feature_dim + 1])
    batched_targets = tf.reshape(epoch_targets[:cut],
                                 [full_batches, batch_size, num_classes])
    for step in tf.range(batches):
      weights = _sgd_step(weights, batched_inputs[step],
                          batched_targets[step], full_step)
    if with_rest:
      weights = _sgd_step(weights, epoch_inputs[cut:], epoch_targets[cut:],
                          rest_step)
    return weights

  batches_per_epoch = full_batches + (1 if rest else 0)
  updates = steps if steps else epochs * batches_per_epoch
  whole_epochs, partial_batches = divmod(updates, batches_per_epoch)
  for epoch in tf.range(whole_epochs):
    weights = one_epoch(weights, epoch, full_batches, bool(rest))
  if partial_batches:
    # A step budget that ends inside an epoch: its first full batches
    # (partial_batches < batches_per_epoch, so never the smaller last one).
    weights = one_epoch(weights, tf.constant(whole_epochs), partial_batches,
                        False)
  return collections.OrderedDict(kernel=weights[:feature_dim],
                                 bias=weights[feature_dim])


class CReFFServerFactory(tff.aggregators.UnweightedAggregationFactory):
  """Per-class real gradients -> matched features -> re-trained classifier.

  Aggregates the clients' per-class real gradients with `ClassMeanFactory`,
  then on the server matches the federated features to the classes that had
  holders this round, using the classifier the clients computed their
  gradients with, and re-trains a new classifier on all features
  (`retrain_classifier`, seeded by `seed` and the round). State:
  the gradient aggregator's state, the features, the re-trained classifier
  and the round number; result: the re-trained classifier and the matching loss
  before and after this round's matching (the shared loop reports the
  result, not the measurements); measurements: the same losses and the
  number of holders per class.
  """

  def __init__(self, initial_classifier: collections.OrderedDict,
               options: CReFFOptions, seed: int):
    self._initial_classifier = initial_classifier
    self._options = options
    self._seed = seed

  def create(self, value_type) -> tff.templates.AggregationProcess:
    options, seed = self._options, self._seed
    feature_dim, num_classes = self._initial_classifier['kernel'].shape
    gradients = class_mean.ClassMeanFactory().create(value_type)
    labels_count = num_classes * options.features_per_class

    @compat.tf_computation
    def initial_server():
      features = tf.random.stateless_normal(
          [labels_count, feature_dim], seed=[seed, 7])
      return collections.OrderedDict(
          features=features,
          classifier=tf.nest.map_structure(tf.constant,
                                           self._initial_classifier),
          round_num=tf.constant(0, tf.int32))

    server_type = initial_server.type_signature.result

    @compat.tf_computation(server_type, value_type[class_mean.VALUES],
                           tff.TensorType(np.float32, [num_classes]))
    def server_update(server, real, holders):

      @tf.function
      def update(server, real, holders):
        labels = feature_labels(num_classes, options.features_per_class)
        features, before, after = match_features(
            server['features'], server['classifier'], real['kernel'],
            tf.cast(holders > 0, tf.float32), options.match_steps,
            options.feature_lr)
        # Each round's fresh classifier and epoch orders flow from the seed
        # and the round number alone.
        round_seed = tf.random.experimental.stateless_fold_in(
            tf.constant([seed, _RETRAIN_SEED_TAG]),
            server['round_num'])
        init_seed, order_seed = tf.unstack(
            tf.random.experimental.stateless_split(round_seed, 2))
        if options.retrain_init == 'fresh':
          initial = fresh_classifier(feature_dim, num_classes, init_seed)
        else:
          initial = collections.OrderedDict(
              kernel=tf.zeros([feature_dim, num_classes]),
              bias=tf.zeros([num_classes]))
        classifier = retrain_classifier(
            features, labels, initial, epochs=options.retrain_epochs,
            batch_size=options.retrain_batch_size,
            learning_rate=options.retrain_lr, seed=order_seed,
            steps=options.retrain_steps)
        return (collections.OrderedDict(features=features,
                                        classifier=classifier,
                                        round_num=server['round_num'] + 1),
                before, after)

      return update(server, real, holders)

    @compat.federated_computation
    def init_fn():
      return tff.federated_zip(collections.OrderedDict(
          gradients=gradients.initialize(),
          server=tff.federated_eval(initial_server, tff.SERVER)))

    @compat.federated_computation(init_fn.type_signature.result,
                                  tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      aggregated = gradients.next(state.gradients, value)
      server, loss_before, loss_after = tff.federated_map(
          server_update, (state.server, aggregated.result[class_mean.VALUES],
                          aggregated.measurements.holders))
      return tff.templates.MeasuredProcessOutput(
          state=tff.federated_zip(collections.OrderedDict(
              gradients=aggregated.state, server=server)),
          result=tff.federated_zip(collections.OrderedDict(
              classifier=server.classifier,
              matching_loss_before=loss_before,
              matching_loss_after=loss_after)),
          measurements=tff.federated_zip(collections.OrderedDict(
              matching_loss_before=loss_before,
              matching_loss_after=loss_after,
              holders=aggregated.measurements.holders)))

    return tff.templates.AggregationProcess(init_fn, next_fn)


def _initial_classifier(model_spec: spec_lib.ModelSpec):
  layer = builders.classifier_layer(model_spec.build_keras())
  return collections.OrderedDict(kernel=layer.kernel.numpy(),
                                 bias=layer.bias.numpy())


def _creff_plugin(model_spec: spec_lib.ModelSpec, options: CReFFOptions,
                  seed: int,
                  initial_classifier) -> local_training.LocalLoopPlugin:
  """Real gradients on the received backbone with the re-trained classifier."""
  num_classes = model_spec.num_classes

  def real_gradients(client):
    features = builders.feature_extractor(client.model)
    classifier = client.broadcast
    return local_training.Preparation(
        report=classifier_gradients.dataset_class_gradients(
            lambda x: features(x, training=False), classifier['kernel'],
            classifier['bias'], client.train, num_classes))

  return local_training.LocalLoopPlugin(
      initial_broadcast=lambda: initial_classifier,
      prepare=real_gradients,
      report_factory=class_mean.FieldFactory(
          'extension', CReFFServerFactory(initial_classifier, options, seed)),
      update_broadcast=lambda classifier, report: report['classifier'])


def _with_retrained_classifier(process, model_spec: spec_lib.ModelSpec):
  """The process whose model weights carry the re-trained classifier."""
  model = model_spec.build_keras()
  layer = builders.classifier_layer(model)
  position = {v.ref(): i for i, v in enumerate(model.trainable_variables)}
  kernel_index = position[layer.kernel.ref()]
  bias_index = position[layer.bias.ref()]
  state_type = process.get_model_weights.type_signature.parameter
  weights_type = process.get_model_weights.type_signature.result
  classifier_type = state_type.client_work.broadcast

  @compat.tf_computation(weights_type, classifier_type)
  def swap_classifier(weights, classifier):
    trainable = list(weights.trainable)
    trainable[kernel_index] = classifier['kernel']
    trainable[bias_index] = classifier['bias']
    return tff.learning.models.ModelWeights(
        trainable=trainable, non_trainable=list(weights.non_trainable))

  @compat.federated_computation(state_type)
  def get_model_weights(state):
    return swap_classifier(process.get_model_weights(state),
                           state.client_work.broadcast)

  return tff.learning.templates.LearningProcess(
      process.initialize, process.next, get_model_weights,
      process.set_model_weights)


def build_creff(
    model_spec: spec_lib.ModelOrFactory,
    client_optimizer: tff.learning.optimizers.Optimizer,
    server_optimizer: tff.learning.optimizers.Optimizer,
    options: CReFFOptions,
    *,
    seed: int = 0,
) -> tff.learning.templates.LearningProcess:
  """CReFF: FedAvg plus a classifier re-trained on federated features.

  Round t with backbone f(.; P^t), FedAvg classifier W^t and re-trained
  classifier W_r^t (initially W^0):

  * client k reports, for each class c it holds, the real gradient
    g_k,c = grad_W L(W_r^t; P^t, D_k,c) (Shang et al. 2022, eq. 5; closed
    form, all its examples of c) and trains locally as FedAvg;
  * the server averages g_c over the holders of c, then takes
    `match_steps` SGD steps on the federated features S (m per class) to
    minimise sum_c D(grad_W L(W_r^t; S_c), g_c) with D the per-row cosine
    distance (eq. 6), and re-trains a new classifier W_r^{t+1} (seeded
    `nn.Linear`-style start, or zero) on S by min_W mean CE(W; S) (eq. 7)
    with `retrain_epochs` epochs of mini-batch SGD (batch
    `retrain_batch_size`, stateless per-epoch shuffles): epochs *
    ceil(C m / batch) updates per round, as the CReFF code (or exactly
    `retrain_steps` updates, 004 appendix C.2's reading);
  * the global model is FedAvg's (P^{t+1}, W^{t+1}); the model weights the
    process exposes, for evaluation, are (P^{t+1}, W_r^{t+1}).

  Args:
    model_spec: the model (a final Dense `classifier`).
      A `ModelSpec`, or a no-argument Keras model factory whose last layer
      is a Dense `classifier` (`spec_lib.as_model_spec`).
    client_optimizer: local optimizer.
    server_optimizer: server optimizer on the averaged delta.
    options: CReFF's server hyperparameters.
    seed: seeds the features' initial values, the fresh classifiers and the
      per-epoch shuffles.

  Returns:
    A `tff.learning.templates.LearningProcess`.
  """
  model_spec = spec_lib.as_model_spec(model_spec)
  initial_classifier = _initial_classifier(model_spec)
  process = fedavg_family.build_local_training_process(
      model_spec, client_optimizer, server_optimizer,
      plugin=_creff_plugin(model_spec, options, seed, initial_classifier))
  return _with_retrained_classifier(process, model_spec)


def _build(model_spec, config, options, context):
  """CReFF (Shang et al. 2022): classifier re-trained on federated features."""
  del context  # Unused.
  return build_creff(model_spec, config.client_optimizer(),
                     config.server_sgd(), options, seed=model_spec.seed)


CREFF = method.Method('creff', _build, CReFFOptions,
                      local_loss=method.LocalLoss.OWN)
