"""The composition monitor of Wang et al. (002 sec 3.2), as a TFF computation.

Each round the server trains a copy of the received global model G_t on each
class's auxiliary examples (as a client would, with the shared local loop)
and reads the change of the output layer's kernel W (one column W_(i) per
output node i). With D^(p)_(i) the change of W_(i) per processed auxiliary
example of class p:

* eq. 7 (filter): for every component r of W_(i),
  Ra_{i,r} = |D^(i)_(i),r| / |mean_{p != i} D^(p)_(i),r|; the components with
  Ra_{i,r} > T_Ra (1.25) are kept. The class ratio is eq. 7 on the kept part
  of W_(i): Ra_i = |sum_kept D^(i)_(i)| / |sum_kept mean_{p != i} D^(p)_(i)|
  (the reference code's `whole_determination`; magnitudes, because a class's
  own update and the others' updates of its node have opposite signs). A class
  whose components all fail the filter uses all of them; Ra_i is capped at
  `MAX_RATIO` (the reference code's cap; a non-finite ratio takes it too).
* eq. 8 (composition): the global update is, to first order, the sum of
  per-example contributions, and a client's update the sum of its examples'.
  The paper's FedAvg is the unweighted mean (1/K) sum_k Delta_k, which gives
  eq. 8, N_i D^(i) + (n - N_i) mean_{p != i} D^(p) = K (W^{G_t+1} - W^{G_t}).
  Our processes aggregate as TFF does, weighted by the examples n_k each
  client processed: G_t+1 - G_t = sum_k n_k Delta_k / n with n = sum_k n_k
  and Delta_k = sum_i N_i^k D^(i), so
    M_i D^(i) + (M - M_i) mean_{p != i} D^(p) = n (W^{G_t+1} - W^{G_t}),
  with M_i = sum_k n_k N_i^k (each example counted with its client's weight)
  and M = sum_i M_i = sum_k n_k^2. The server knows every n_k (its
  aggregation weights, the only thing clients disclose), so n and M are
  known and M_i is solved per kept component; values outside [0, M] are
  dropped as outliers and the rest averaged; a class with none left gets
  M / C (the reference code's fallback). The released composition is
  M_i / M, the composition of the update the server actually applied; with
  equally large clients (n_k = n / K) it is N_i / n, eq. 8's answer. The
  monitor computes n, M and the true M_i (a simulation-only diagnostic) from
  the clients' training datasets.

`build_monitored_process` wraps ANY `LearningProcess` whose measurements hold
the shared client work's `train.num_examples` (the example-weighted
aggregation eq. 8 assumes): its `next` is one federated computation that
runs the monitor on G_t, optionally lets a hook change the inner state from
the ratios (Ratio Loss's class weights), runs the inner `next` and estimates
the round's composition from G_t+1. The estimate, the ratios and the cosine
similarity to the cohort's true composition leave as the measurements'
`released` member, which the runner writes to metrics.csv and summary.json.
"""

import collections
from typing import Optional

import numpy as np
import tensorflow as tf

from tff_imbalance import compat
from tff_imbalance import errors
from tff_imbalance.data import arrays
from tff_imbalance.learning import classifier_gradients
from tff_imbalance.learning.client_work import local_training
from tff_imbalance.models import builders
from tff_imbalance.models import spec as spec_lib

tff = compat.tff

# The paper's filter threshold T_Ra (sec 3.2).
DEFAULT_THRESHOLD = 1.25
# The reference code caps Ra_i (models/Fed.py::whole_determination).
MAX_RATIO = 5000.0
# The measurements member the runner releases (runner.RELEASED_KEY; the
# learning layer does not import the runner).
RELEASED = 'released'


def check_aux_data(aux: arrays.LabeledArrays | None, what: str) -> None:
  """Refuses to build a monitored process without auxiliary data.

  Args:
    aux: the server's auxiliary examples.
    what: what needs them, by its Python and flag names, e.g.
      "monitor=True (--monitor)".

  Raises:
    errors.UserInputError: if `aux` is None or empty.
  """
  if aux is None or not len(aux):
    raise errors.UserInputError(
        f'{what} needs the server\'s auxiliary data: pass aux_data, a few '
        'examples of every class held out of every client (--aux_per_class '
        '>= 1).')


def _own_and_others(changes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """Splits per-class kernel changes into own and mean-of-others parts.

  Args:
    changes: [C, s, C] float; changes[p, r, i] is the change of kernel
      component (r, i) per example of class p.

  Returns:
    own [s, C] with own[r, i] = changes[i, r, i], and others [s, C], the mean
    over p != i of changes[p, r, i].
  """
  num_classes = tf.cast(tf.shape(changes)[0], changes.dtype)
  by_node = tf.transpose(changes, [1, 0, 2])
  own = tf.linalg.diag_part(by_node)
  others = (tf.reduce_sum(by_node, axis=1) - own) / (num_classes - 1.0)
  return own, others


def class_ratios(changes: tf.Tensor,
                 threshold: float = DEFAULT_THRESHOLD
                ) -> tuple[tf.Tensor, tf.Tensor]:
  """Ra_i per class and the kept kernel components (eq. 7 with its filter).

  Args:
    changes: [C, s, C] per-example kernel changes (see `_own_and_others`).
    threshold: T_Ra; components with a larger ratio are kept.

  Returns:
    ratios [C] float and kept [s, C] bool (all True for a class none of whose
    components passed the filter).
  """
  own, others = _own_and_others(changes)
  component_ratio = tf.abs(own) / tf.abs(others)  # inf and nan compare fine.
  passed = component_ratio > threshold
  kept = tf.logical_or(
      passed, tf.logical_not(tf.reduce_any(passed, axis=0, keepdims=True)))
  zeros = tf.zeros_like(own)
  own_sum = tf.abs(tf.reduce_sum(tf.where(kept, own, zeros), axis=0))
  others_sum = tf.abs(tf.reduce_sum(tf.where(kept, others, zeros), axis=0))
  ratios = tf.where(others_sum > 0,
                    tf.math.divide_no_nan(own_sum, others_sum), MAX_RATIO)
  # A diverged model's changes are not finite; its ratios take the cap, so
  # that class weights derived from them stay finite.
  ratios = tf.where(tf.math.is_nan(ratios), MAX_RATIO, ratios)
  return tf.minimum(ratios, MAX_RATIO), kept


def estimate_composition(changes: tf.Tensor, kept: tf.Tensor,
                         global_change: tf.Tensor, update_scale: tf.Tensor,
                         total: tf.Tensor) -> tf.Tensor:
  """The estimated examples per class of the round (eq. 8, outliers removed).

  Solves X_i D^(i) + (X - X_i) mean_{p != i} D^(p) = S (W^{G_t+1} - W^{G_t})
  for X_i on every kept component. The paper's unweighted FedAvg (eq. 8):
  S = K clients, X = n examples, X_i = N_i. TFF's example-weighted mean (our
  processes, see the module docstring): S = n, X = sum_k n_k^2, X_i =
  sum_k n_k N_i^k.

  Args:
    changes: [C, s, C] per-example kernel changes at G_t.
    kept: [s, C] bool, the components eq. 7's filter kept.
    global_change: [s, C] kernel of G_t+1 minus kernel of G_t.
    update_scale: S, the global change times S is the sum of the
      per-example contributions.
    total: X, the sum of X_i over classes.

  Returns:
    [C] float, X_i per class (X / C for a class without a usable component).
  """
  own, others = _own_and_others(changes)
  dtype = changes.dtype
  n = tf.cast(total, dtype)
  per_component = (tf.cast(update_scale, dtype) * global_change -
                   n * others) / (own - others)
  usable = (kept & tf.math.is_finite(per_component) & (per_component >= 0.0)
            & (per_component <= n))
  count = tf.reduce_sum(tf.cast(usable, dtype), axis=0)
  total = tf.reduce_sum(
      tf.where(usable, per_component, tf.zeros_like(per_component)), axis=0)
  fallback = n / tf.cast(tf.shape(own)[1], dtype)
  return tf.where(count > 0, tf.math.divide_no_nan(total, count), fallback)


def cosine_similarity(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
  """cos(a, b) = a.b / (|a| |b|) (002 sec 3.2's CS score); 0 for a zero vector."""
  a, b = tf.cast(a, tf.float32), tf.cast(b, tf.float32)
  return tf.math.divide_no_nan(tf.reduce_sum(a * b),
                               tf.norm(a) * tf.norm(b))


def _classifier_kernel_index(model_spec: spec_lib.ModelSpec) -> int:
  """Position of the classifier's kernel among the trainable weights."""
  model = model_spec.build_keras()
  kernel = builders.classifier_layer(model).kernel
  return [v.ref() for v in model.trainable_variables].index(kernel.ref())


def _class_examples(aux: arrays.LabeledArrays,
                    num_classes: int) -> list[np.ndarray]:
  per_class = [aux.x[aux.y == c].astype(np.float32) for c in range(num_classes)]
  missing = [c for c, x in enumerate(per_class) if not len(x)]
  if missing:
    raise errors.UserInputError(
        f'the composition monitor needs auxiliary examples of every class; '
        f'classes {missing} have none. Pass aux_data with every class '
        '(--aux_per_class >= 1).')
  return per_class


def _per_example_forward(model: tf.keras.Model) -> bool:
  """Whether the model's training-mode output for an example ignores the
  rest of its batch (no dropout, whose masks here follow the batch, and no
  batch normalisation)."""
  return not any(isinstance(layer, (tf.keras.layers.Dropout,
                                    tf.keras.layers.BatchNormalization))
                 for layer in model.submodules)


def _single_step_changes(model_spec: spec_lib.ModelSpec,
                         per_class: list[np.ndarray],
                         client_optimizer: tff.learning.optimizers.Optimizer):
  """`build_auxiliary_changes` when each class trains one step (see there)."""
  num_classes = model_spec.num_classes
  examples = np.concatenate(per_class)
  labels = np.repeat(np.arange(num_classes), [len(x) for x in per_class])
  counts = np.array([len(x) for x in per_class], np.float32)

  @compat.tf_computation(model_spec.weights_type())
  def auxiliary_changes(weights):
    model = model_spec.build_keras()
    model_weights = tff.learning.models.ModelWeights.from_model(model)
    features_of = builders.feature_extractor(model)
    layer = builders.classifier_layer(model)

    @tf.function
    def all_classes(initial_weights):
      tf.nest.map_structure(lambda v, t: v.assign(t), model_weights,
                            initial_weights)
      gradients = classifier_gradients.class_mean_gradients(
          features_of(tf.constant(examples), training=True),
          tf.constant(labels), layer.kernel, layer.bias,
          num_classes)['values']['kernel']  # [C, s, C], one per class
      kernels = tf.tile(layer.kernel[tf.newaxis], [num_classes, 1, 1])
      state = client_optimizer.initialize(
          (tf.TensorSpec(kernels.shape, tf.float32),))
      _, (trained,) = client_optimizer.next(state, (kernels,), (gradients,))
      return (trained - kernels) / counts[:, np.newaxis, np.newaxis]

    return all_classes(weights)

  return auxiliary_changes


def build_auxiliary_changes(model_spec: spec_lib.ModelSpec,
                            aux: arrays.LabeledArrays,
                            client_optimizer: tff.learning.optimizers.Optimizer,
                            local_epochs: int, batch_size: int):
  """A TF computation: global weights -> per-example kernel changes [C, s, C].

  For each class p the global model is trained on p's auxiliary examples with
  the clients' optimizer, epochs and batch size (002 sec 3.2, Fig. 1), and the
  classifier kernel's change is divided by the examples processed.

  When that training is a single step (one epoch, every class's examples in
  one batch) of a model whose forward pass treats each example alone (no
  dropout, no batch normalisation), the step is taken in closed form for all
  classes at once: the kernel's change for class p is the optimizer's first
  step on p's mean classifier gradient (`classifier_gradients`), from one
  forward pass over all the auxiliary examples instead of C trainings
  (tested equal to the trainings). Only the kernel's change is read, and an
  optimizer's first step on it (SGD, momentum, Adam) depends on its own
  gradient alone.

  Args:
    model_spec: the model.
    aux: the server's auxiliary examples, every class present.
    client_optimizer: the clients' local optimizer.
    local_epochs: the clients' local epochs E.
    batch_size: the clients' batch size B.

  Returns:
    A `tff.Computation` (ModelWeights -> float32 [C, s, C]).

  Raises:
    errors.UserInputError: if a class has no auxiliary example.
  """
  num_classes = model_spec.num_classes
  per_class = _class_examples(aux, num_classes)
  if local_epochs == 1 and max(len(x) for x in per_class) <= batch_size and (
      _per_example_forward(model_spec.build_keras())):
    return _single_step_changes(model_spec, per_class, client_optimizer)
  return _trained_changes(model_spec, per_class, client_optimizer,
                          local_epochs, batch_size)


def _trained_changes(model_spec: spec_lib.ModelSpec,
                     per_class: list[np.ndarray],
                     client_optimizer: tff.learning.optimizers.Optimizer,
                     local_epochs: int, batch_size: int):
  """`build_auxiliary_changes` by training a copy per class."""
  num_classes = model_spec.num_classes
  kernel_index = _classifier_kernel_index(model_spec)
  # A Python loop: C copies of the training loop in the graph (a tf.range
  # loop over the classes, with each class's dataset made inside it, does
  # not survive the in-process executor's graph pruning). The single-step
  # path above avoids both.

  @compat.tf_computation(model_spec.weights_type())
  def auxiliary_changes(weights):
    train = local_training.build_local_trainer(
        model_spec.build_keras(), client_optimizer, num_classes)

    @tf.function
    def all_classes(initial_weights):
      changes = []
      # One call per class, in order: the calls share the model's variables.
      for label, x in enumerate(per_class):
        dataset = tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
            x=x, y=np.full(len(x), label, np.int64)))
        delta = train(initial_weights,
                      dataset.repeat(local_epochs).batch(batch_size))
        # delta = w^t - w_trained; eq. 8 needs the change w_trained - w^t.
        changes.append(-delta[kernel_index] / float(local_epochs * len(x)))
      return tf.stack(changes)

    return all_classes(weights)

  return auxiliary_changes


def _reports_example_count(metrics_type) -> bool:
  names = tff.structure.name_list(metrics_type)
  if 'client_work' not in names:
    return False
  client_work = metrics_type.client_work
  return ('train' in tff.structure.name_list(client_work) and
          'num_examples' in tff.structure.name_list(client_work.train))


def build_monitored_process(
    inner: tff.learning.templates.LearningProcess,
    model_spec: spec_lib.ModelSpec,
    aux: arrays.LabeledArrays,
    client_optimizer: tff.learning.optimizers.Optimizer,
    *,
    local_epochs: int,
    batch_size: int,
    threshold: float = DEFAULT_THRESHOLD,
    before_round: Optional[tff.Computation] = None,
    after_round: Optional[tff.Computation] = None,
) -> tff.learning.templates.LearningProcess:
  """Wraps a learning process with the composition monitor (002 sec 3.2).

  Round t (1-based): from the received global model G_t the monitor computes
  the per-class auxiliary kernel changes and the ratios Ra (eq. 7); the
  optional `before_round(inner_state, ratios, t) -> inner_state` runs next
  (Ratio Loss puts its class weights alpha + beta Ra into the state there, so
  that clients train with the weights of the model they receive); then the
  inner `next`; then eq. 8 on G_t+1 - G_t estimates the round's composition;
  the optional `after_round(inner_state, estimated_composition, t) ->
  inner_state` runs last (MFE-G sets next round's minority classes there).
  Without a hook the monitor is a pure diagnostic: the inner process's
  states, models and measurements are exactly those of the unwrapped one.

  Args:
    inner: the process to watch; its measurements must hold
      `client_work.train.num_examples` (every process of the registry).
    model_spec: its model.
    aux: the server's auxiliary examples.
    client_optimizer: the clients' local optimizer (replayed on aux data).
    local_epochs: the clients' local epochs.
    batch_size: the clients' batch size.
    threshold: T_Ra of eq. 7's filter.
    before_round: optional TF computation, see above.
    after_round: optional TF computation, see above.

  Returns:
    A `LearningProcess` with state `OrderedDict(inner, round)` and the inner
    measurements plus `released`: `monitor_cosine_similarity`,
    `monitor_estimated_composition`, `monitor_true_composition` (proportions
    M_i / M of the example-weighted aggregate, see the module docstring) and
    `monitor_ratio` (Ra).

  Raises:
    errors.UserInputError: if a class has no auxiliary example, or the inner
      measurements lack the example count.
  """
  aux_changes = build_auxiliary_changes(model_spec, aux, client_optimizer,
                                        local_epochs, batch_size)
  kernel_index = _classifier_kernel_index(model_spec)
  data_type = inner.next.type_signature.parameter[1].member
  metrics_type = inner.next.type_signature.result.metrics.member
  metric_names = tff.structure.name_list(metrics_type)
  if not _reports_example_count(metrics_type):
    raise errors.UserInputError(
        'monitor=True (--monitor) needs an algorithm whose clients report how '
        'many examples they trained on (client_work.train.num_examples); '
        'this one does not: drop the monitor or choose a federated '
        'algorithm.')
  changes_type = aux_changes.type_signature.result
  num_classes = model_spec.num_classes
  structured = isinstance(data_type, tff.StructType)

  @compat.tf_computation(changes_type)
  def ratios_of(changes):
    return class_ratios(changes, threshold)[0]

  @compat.tf_computation(data_type)
  def client_counts(data):
    # n_k, n_k^2 and n_k N_i^k of eq. 8's weighted form, from the examples
    # the client processes (its training dataset, epochs included).
    dataset = data['train'] if structured else data
    counts = tf.cast(dataset.reduce(
        tf.zeros([num_classes], tf.int64),
        lambda total, batch: total + tf.reduce_sum(
            tf.one_hot(batch['y'], num_classes, dtype=tf.int64), axis=0)),
                     tf.float32)
    examples = tf.reduce_sum(counts)
    return collections.OrderedDict(examples=examples,
                                   squared=examples * examples,
                                   weighted_counts=examples * counts)

  counts_type = client_counts.type_signature.result
  weights_type = model_spec.weights_type()

  @compat.tf_computation(changes_type, weights_type, weights_type,
                         counts_type)
  def monitor_report(changes, weights_before, weights_after, counts):
    ratios, kept = class_ratios(changes, threshold)
    global_change = (weights_after.trainable[kernel_index] -
                     weights_before.trainable[kernel_index])
    estimate = estimate_composition(changes, kept, global_change,
                                    counts['examples'], counts['squared'])
    truth = counts['weighted_counts']
    released = collections.OrderedDict()
    released['monitor_cosine_similarity'] = cosine_similarity(estimate, truth)
    released['monitor_true_composition'] = tf.math.divide_no_nan(
        truth, tf.reduce_sum(truth))
    released['monitor_estimated_composition'] = tf.math.divide_no_nan(
        estimate, tf.reduce_sum(estimate))
    released['monitor_ratio'] = ratios
    return released

  @compat.tf_computation
  def initial_round():
    return tf.constant(0, tf.int32)

  @compat.tf_computation(np.int32)
  def plus_one(round_num):
    return round_num + 1

  @compat.federated_computation
  def init_fn():
    return tff.federated_zip(collections.OrderedDict(
        inner=inner.initialize(),
        round=tff.federated_eval(initial_round, tff.SERVER)))

  state_type = init_fn.type_signature.result

  @compat.federated_computation(state_type,
                                tff.FederatedType(data_type, tff.CLIENTS))
  def next_fn(state, client_data):
    weights_before = tff.federated_map(inner.get_model_weights, state.inner)
    changes = tff.federated_map(aux_changes, weights_before)
    round_num = tff.federated_map(plus_one, state.round)
    inner_state = state.inner
    if before_round is not None:
      ratios = tff.federated_map(ratios_of, changes)
      inner_state = tff.federated_map(before_round,
                                      (inner_state, ratios, round_num))
    output = inner.next(inner_state, client_data)
    weights_after = tff.federated_map(inner.get_model_weights, output.state)
    counts = tff.federated_sum(tff.federated_map(client_counts, client_data))
    released = tff.federated_map(
        monitor_report, (changes, weights_before, weights_after, counts))
    metrics = collections.OrderedDict(
        (name, output.metrics[name]) for name in metric_names)
    metrics[RELEASED] = released
    inner_state = output.state
    if after_round is not None:
      inner_state = tff.federated_map(after_round, (
          inner_state, released.monitor_estimated_composition, round_num))
    new_state = tff.federated_zip(
        collections.OrderedDict(inner=inner_state, round=round_num))
    return tff.learning.templates.LearningProcessOutput(
        new_state, tff.federated_zip(metrics))

  @compat.tf_computation(state_type.member)
  def get_model_weights(state):
    return inner.get_model_weights(state['inner'])

  @compat.tf_computation(state_type.member, weights_type)
  def set_model_weights(state, weights):
    return collections.OrderedDict(
        inner=inner.set_model_weights(state['inner'], weights),
        round=state['round'])

  return tff.learning.templates.LearningProcess(
      init_fn, next_fn, get_model_weights, set_model_weights)
