"""The one local-training client work that every custom algorithm plugs into.

Written once, parameterised by what algorithms change (TFF's own pattern in
`learning/templates/model_delta_client_work.py`):

* a per-example loss `loss(labels, logits, context) -> [B]` (see `losses`);
* an optional proximal strength mu (FedProx, Li et al. 2020, eq. 2): the local
  objective is F_k(w) + mu/2 ||w - w^t||^2, so mu (w - w^t) is ADDED to every
  gradient, pulling the client towards the broadcast model w^t;
* an optional `LocalLoopPlugin` of a few hooks: server state broadcast to
  clients each round (class weights, prototypes, priors, duals); `prepare`,
  run once on the received model before training, which may change the
  dataset (resampling), the loss's context (a local prior), report on the
  received model (prototypes, losses; aggregated inside this client work by
  an embedded `tff.templates.AggregationProcess`, pattern A of DESIGN.md, as
  TFF's MIME does, and folded back into the broadcast state for the next
  round) and rescale the client's aggregation weight; `batch_loss` and
  `after_step` for objectives that need more than labels and logits
  (BalanceFL) or a further update after each step (RedGrape), the former
  passing values of the step to the latter. A plug-in may also need each
  client's population index, its examples in one pass (CLIMB) or a frozen
  teacher copy of the received model (BalanceFL).

Every client also reports its label histogram, summed over the round's cohort:
the true class composition of the round's training data, which the
composition monitor and the statistics need and which costs nothing.

With `validation_slots=K`, each client's data is `OrderedDict(train=...,
validation=..., slot=k)` (k its position in the round's cohort of fixed size
K, as a one-element dataset because TFF's client data must be sequences) and
the client also reports its validation loss under the model it received and
under the model it sends back, as one-hot vectors over the K slots; summed
over the cohort they become per-slot vectors in the process's measurements,
which is how psi client selection (Fed-Focal, 000 eqs. 7-13) learns which
clients improved, computed inside the TFF computation.
`build_cohort_validation_loss` evaluates the same loss under the new global
model on last round's cohort (psi's default "global" reading).

The local loop iterates `for batch in iter(dataset)` inside a `tf.function`
(TFF's DATASET_ITERATOR loop), measured ~1.7x faster than `dataset.reduce` on
CPU, and the update is the model delta w^t - w_k, zeroed with weight 0 when it
is not finite, as in TFF's FedAvg.
"""

import collections
import dataclasses
from typing import Any, Callable, Optional

import numpy as np
import tensorflow as tf

from tff_imbalance import compat
from tff_imbalance import losses
from tff_imbalance.models import spec as spec_lib

tff = compat.tff


# What a plug-in may ask the loop for besides the client's training data,
# named in `LocalLoopPlugin.needs`. The first two are fields of the client's
# data (the runner supplies them when the process's client data type asks).
CLIENT_INDEX = 'client_index'  # the client's population index k (int32)
EVALUATION = 'evaluation'  # its training examples in one pass
TEACHER = 'teacher'  # a frozen copy of the model it received
_DATA_NEEDS = (EVALUATION, CLIENT_INDEX)  # In the client data type's order.


@dataclasses.dataclass(frozen=True)
class Client:
  """One client at the start of its local training, as `prepare` sees it.

  Attributes:
    model: the Keras model the loop trains, holding the received weights.
    train: the client's round dataset ('x', 'y' batches).
    broadcast: the plug-in's server state, as broadcast this round.
    teacher: a frozen copy of the received model (with `TEACHER`), or None.
    client_index: the client's population index (with `CLIENT_INDEX`).
    evaluation: its examples in one pass (with `EVALUATION`).
  """
  model: tf.keras.Model
  train: tf.data.Dataset
  broadcast: Any
  teacher: Optional[tf.keras.Model] = None
  client_index: Optional[tf.Tensor] = None
  evaluation: Optional[tf.data.Dataset] = None


@dataclasses.dataclass(frozen=True)
class Preparation:
  """What `prepare` hands the loop; a field left None keeps the default.

  Attributes:
    train: the dataset to train on (default: the client's; e.g. resampled).
    context: what the per-example loss receives as its state and `batch_loss`
      and `after_step` read (default: the broadcast; e.g. a prior from the
      client's own counts, per-client tensors, the teacher).
    label_counts: the client's true [C] int64 label counts, reported instead
      of the counts of the batches it trained on (default: those).
    report: the client's report on the received model, aggregated over the
      round's clients by the plug-in's `report_factory` (default: none).
    weight_scale: a factor on the client's aggregation weight, its example
      count (default: 1).
  """
  train: Optional[tf.data.Dataset] = None
  context: Any = None
  label_counts: Optional[tf.Tensor] = None
  report: Any = None
  weight_scale: Optional[tf.Tensor] = None


@dataclasses.dataclass(frozen=True)
class LocalLoopPlugin:
  """What a method adds to the shared local loop beyond a loss.

  A round on a client runs: `prepare` (once, on the received model), the
  local epochs (each step: `batch_loss` or the per-example loss, the
  optimizer step, `after_step`), the model delta; on the server, the
  reports' aggregation (`report_factory`) and `update_broadcast`.

  Attributes:
    initial_broadcast: no-arg callable returning the initial server state (a
      structure of numpy arrays) that is broadcast to every client.
    needs: what the loop supplies besides the training data: any of
      `CLIENT_INDEX`, `EVALUATION` (then in `Client`) and `TEACHER`.
    prepare: optional `(Client) -> Preparation`, run on each client before
      local training, with the received weights.
    batch_loss: optional `(model, batch, context, examples_seen) ->
      (per-example loss [B], logits [B, C], step_values)`, replacing
      `loss(batch['y'], model(batch['x']), context)` in training where the
      objective needs more than labels and logits; `examples_seen` (int64,
      examples before this batch) makes per-step stateless randomness
      distinct; `step_values` (any structure, e.g. a gradient taken before
      the step) goes to this step's `after_step`. Validation still uses the
      loss.
    after_step: optional `(model, gradients, context, step_values) -> None`,
      run after every optimizer step with the gradients it applied (aligned
      with `model.trainable_variables`): a further update of some variables.
    report_factory: the unweighted aggregation factory of the reports
      (default: sum).
    update_broadcast: optional TF function `(broadcast, aggregated_report) ->
      new broadcast`, run on the server after aggregation.
  """
  initial_broadcast: Callable[[], Any]
  needs: frozenset[str] = frozenset()
  prepare: Optional[Callable[[Client], Preparation]] = None
  batch_loss: Optional[Callable[..., tuple[Any, Any, Any]]] = None
  after_step: Optional[Callable[..., None]] = None
  report_factory: Optional[tff.aggregators.UnweightedAggregationFactory] = None
  update_broadcast: Optional[Callable[[Any, Any], Any]] = None


def with_broadcast(state: tff.learning.templates.LearningAlgorithmState,
                   broadcast: Any
                  ) -> tff.learning.templates.LearningAlgorithmState:
  """A process state whose client work broadcasts `broadcast` next round.

  For hooks that set a plug-in's server state from outside the client work
  (Ratio Loss's class weights, MFE-G's minority set), inside a TF
  computation on the state of a process built on this client work.
  """
  client_work = collections.OrderedDict(
      broadcast=broadcast, report=state.client_work['report'])
  return tff.learning.templates.LearningAlgorithmState(
      global_model_weights=state.global_model_weights,
      distributor=state.distributor, client_work=client_work,
      aggregator=state.aggregator, finalizer=state.finalizer)


def _no_plugin() -> LocalLoopPlugin:
  # A scalar placeholder keeps every TFF type non-empty.
  return LocalLoopPlugin(initial_broadcast=lambda: np.zeros([], np.float32))


def _one_element(dataset: tf.data.Dataset) -> tf.Tensor:
  """The value of a one-element int32 dataset (client data are sequences)."""
  return dataset.reduce(tf.constant(0, tf.int32), lambda total, k: total + k)


def evaluate_mean_loss(model: tf.keras.Model, loss: losses.PerExampleLoss,
                       dataset: tf.data.Dataset, broadcast: Any) -> tf.Tensor:
  """Mean per-example loss of `model` (inference mode) over `dataset`."""
  total, count = tf.constant(0.0), tf.constant(0.0)
  for batch in iter(dataset):
    per_example = loss(batch['y'], model(batch['x'], training=False),
                       broadcast)
    total += tf.reduce_sum(per_example)
    count += tf.cast(tf.size(per_example), tf.float32)
  return tf.math.divide_no_nan(total, count)


def _prepare(plugin: LocalLoopPlugin, client: Client) -> Preparation:
  """The plug-in's preparation with every default filled in."""
  prepared = (Preparation() if plugin.prepare is None else
              plugin.prepare(client))
  return dataclasses.replace(
      prepared,
      train=client.train if prepared.train is None else prepared.train,
      context=(client.broadcast if prepared.context is None else
               prepared.context))


def _build_training(model: tf.keras.Model,
                    optimizer: tff.learning.optimizers.Optimizer,
                    loss: losses.PerExampleLoss, proximal_strength: float,
                    num_classes: int, plugin: LocalLoopPlugin):
  """The local epochs: `train(anchor, preparation) -> (train sums, label
  counts)`, for use inside the client's `tf.function`."""
  trainable = tuple(model.trainable_variables)

  def step_loss(batch, context, examples_seen):
    if plugin.batch_loss is not None:
      return plugin.batch_loss(model, batch, context, examples_seen)
    logits = model(batch['x'], training=True)
    return loss(batch['y'], logits, context), logits, ()

  def train(anchor, preparation):
    optimizer_state = optimizer.initialize(
        tuple(tf.TensorSpec(v.shape, v.dtype) for v in trainable))
    loss_sum = tf.constant(0.0, tf.float32)
    num_correct = tf.constant(0, tf.int64)
    num_examples = tf.constant(0, tf.int64)
    label_counts = tf.zeros([num_classes], tf.int64)
    for batch in iter(preparation.train):
      with tf.GradientTape() as tape:
        per_example_loss, logits, step_values = step_loss(
            batch, preparation.context, num_examples)
        batch_loss = tf.reduce_mean(per_example_loss)
      gradients = tape.gradient(batch_loss, trainable)
      if proximal_strength:
        gradients = tuple(g + proximal_strength * (w - w0)
                          for g, w, w0 in zip(gradients, trainable, anchor))
      optimizer_state, new_weights = optimizer.next(
          optimizer_state, tuple(tf.identity(v) for v in trainable),
          gradients)
      for variable, value in zip(trainable, new_weights):
        variable.assign(value)
      if plugin.after_step is not None:
        plugin.after_step(model, gradients, preparation.context, step_values)
      batch_size = tf.shape(batch['y'], out_type=tf.int64)[0]
      loss_sum += batch_loss * tf.cast(batch_size, tf.float32)
      predictions = tf.argmax(logits, axis=-1, output_type=tf.int64)
      num_correct += tf.reduce_sum(
          tf.cast(tf.equal(predictions, batch['y']), tf.int64))
      num_examples += batch_size
      label_counts += tf.reduce_sum(
          tf.one_hot(batch['y'], num_classes, dtype=tf.int64), axis=0)
    if preparation.label_counts is not None:
      label_counts = preparation.label_counts
    train_sums = collections.OrderedDict(
        loss_sum=loss_sum, num_correct=num_correct, num_examples=num_examples)
    return train_sums, label_counts

  return train


def _client_result(initial_weights, model_weights, num_examples,
                   weight_scale) -> tff.learning.templates.ClientResult:
  """The delta w^t - w_k, zeroed with weight 0 when it is not finite."""
  delta = tf.nest.map_structure(tf.subtract, list(initial_weights.trainable),
                                list(model_weights.trainable))
  finite = tf.reduce_all(
      [tf.reduce_all(tf.math.is_finite(d)) for d in delta])
  delta = tf.nest.map_structure(
      lambda d: tf.where(finite, d, tf.zeros_like(d)), delta)
  update_weight = tf.where(finite, tf.cast(num_examples, tf.float32), 0.0)
  if weight_scale is not None:
    update_weight = update_weight * weight_scale
  return tff.learning.templates.ClientResult(update=delta,
                                             update_weight=update_weight)


def _build_local_update(model: tf.keras.Model,
                        optimizer: tff.learning.optimizers.Optimizer,
                        loss: losses.PerExampleLoss, proximal_strength: float,
                        num_classes: int,
                        plugin: LocalLoopPlugin,
                        validation_slots: Optional[int],
                        teacher: Optional[tf.keras.Model] = None):
  """The client's tf.function: prepare, local epochs, delta and report."""
  models = [model] + ([] if teacher is None else [teacher])
  weights = [tff.learning.models.ModelWeights.from_model(m) for m in models]
  train = _build_training(model, optimizer, loss, proximal_strength,
                          num_classes, plugin)
  structured = bool(validation_slots) or bool(set(_DATA_NEEDS) & plugin.needs)

  def slot_loss(data, context):
    slot = tf.one_hot(_one_element(data['slot']), validation_slots,
                      dtype=tf.float32)
    return slot * evaluate_mean_loss(model, loss, data['validation'], context)

  @tf.function
  def local_update(initial_weights, data, broadcast):
    for model_weights in weights:
      tf.nest.map_structure(lambda v, t: v.assign(t), model_weights,
                            initial_weights)
    client = Client(
        model=model, train=data['train'] if structured else data,
        broadcast=broadcast, teacher=teacher,
        client_index=(_one_element(data[CLIENT_INDEX])
                      if CLIENT_INDEX in plugin.needs else None),
        evaluation=data[EVALUATION] if EVALUATION in plugin.needs else None)
    preparation = _prepare(plugin, client)
    if validation_slots:
      validation_loss_before = slot_loss(data, preparation.context)
    train_sums, label_counts = train(
        tuple(tf.identity(t) for t in initial_weights.trainable), preparation)
    report = collections.OrderedDict(label_counts=label_counts)
    if validation_slots:
      report['validation_loss_before'] = validation_loss_before
      report['validation_loss_after'] = slot_loss(data, preparation.context)
    if preparation.report is not None:
      report['extension'] = preparation.report
    client_result = _client_result(initial_weights, weights[0],
                                   train_sums['num_examples'],
                                   preparation.weight_scale)
    return client_result, train_sums, report

  return local_update


def _validation_data_type(model_spec: spec_lib.ModelSpec) -> tff.Type:
  """`OrderedDict(validation, slot)`: what `build_cohort_validation_loss`
  reads of a client (see `FederatedData.validation_inputs`)."""
  return tff.StructWithPythonType(
      [('validation', tff.SequenceType(
          compat.tensorflow_to_type(model_spec.batch_spec))),
       ('slot', tff.SequenceType(tff.TensorType(np.int32)))],
      collections.OrderedDict)


def build_cohort_validation_loss(model_spec: spec_lib.ModelSpec,
                                 loss: losses.PerExampleLoss,
                                 validation_slots: int):
  """Each client's validation loss under given global weights, per slot.

  The same quantity as the client work's `validation_loss_before` (the mean
  per-example `loss` over the client's validation split, no broadcast state),
  for weights chosen by the caller: psi selection's "global" reading (Fed-Focal,
  000 eq. 9) evaluates w^{t+1} on the clients of round t. One broadcast and
  one sum, so TFF's mergeable context (remote workers) runs it too.

  Args:
    model_spec: the model.
    loss: the per-example loss the process's clients validate with.
    validation_slots: the fixed cohort size K.

  Returns:
    A federated computation `(ModelWeights@SERVER, OrderedDict(validation,
    slot)@CLIENTS) -> float32[K]@SERVER`: slot k holds the loss of the client
    in cohort position k (0 for unused slots).
  """
  weights_type = model_spec.weights_type()
  data_type = _validation_data_type(model_spec)

  @compat.tf_computation(weights_type, data_type)
  def client_loss(weights, data):
    model = model_spec.build_keras()
    model_weights = tff.learning.models.ModelWeights.from_model(model)

    @tf.function
    def slot_loss():
      tf.nest.map_structure(lambda v, t: v.assign(t), model_weights, weights)
      slot = tf.one_hot(_one_element(data['slot']), validation_slots,
                        dtype=tf.float32)
      return slot * evaluate_mean_loss(model, loss, data['validation'],
                                       tf.constant(0.0))

    return slot_loss()

  @compat.federated_computation(tff.FederatedType(weights_type, tff.SERVER),
                                tff.FederatedType(data_type, tff.CLIENTS))
  def cohort_validation_loss(weights, data):
    return tff.federated_sum(tff.federated_map(
        client_loss, (tff.federated_broadcast(weights), data)))

  return cohort_validation_loss


def build_local_trainer(model: tf.keras.Model,
                        optimizer: tff.learning.optimizers.Optimizer,
                        num_classes: int,
                        loss: losses.PerExampleLoss = losses.cross_entropy):
  """The same local loop for a client simulated on the server.

  The composition monitor (`learning/monitor.py`, 002 sec 3.2) trains the
  received global model on each class's auxiliary data exactly as a client
  would train on its own; this exposes the loop without a client work around
  it, so that no copy of it exists.

  Args:
    model: the Keras model whose variables the loop trains (built inside the
      calling TFF computation).
    optimizer: the local optimizer.
    num_classes: number of classes C.
    loss: the per-example loss (no broadcast state).

  Returns:
    A function `train(initial_weights, dataset) -> list of tensors`, the model
    delta w^t - w_trained of the trainable weights, for use inside a
    `tf.function`.
  """
  local_update = _build_local_update(model, optimizer, loss, 0.0, num_classes,
                                     _no_plugin(), None)

  def train(initial_weights, dataset):
    client_result, _, _ = local_update(initial_weights, dataset,
                                       tf.constant(0.0))
    return client_result.update

  return train


def _client_data_type(model_spec: spec_lib.ModelSpec, plugin: LocalLoopPlugin,
                      validation_slots: Optional[int]) -> tff.Type:
  """A sequence of batches, or `OrderedDict(train, ...)` with what the
  validation slots and the plug-in's `needs` add."""
  data_type = tff.SequenceType(compat.tensorflow_to_type(model_spec.batch_spec))
  index_type = tff.SequenceType(tff.TensorType(np.int32))
  data_fields = [('train', data_type)]
  if validation_slots:
    data_fields += [('validation', data_type), ('slot', index_type)]
  field_types = {EVALUATION: data_type, CLIENT_INDEX: index_type}
  data_fields += [(need, field_types[need]) for need in _DATA_NEEDS
                  if need in plugin.needs]
  if len(data_fields) == 1:
    return data_type
  return tff.StructWithPythonType(data_fields, collections.OrderedDict)


def build_local_training_client_work(
    model_spec: spec_lib.ModelSpec,
    client_optimizer: tff.learning.optimizers.Optimizer,
    *,
    loss: losses.PerExampleLoss = losses.cross_entropy,
    proximal_strength: float = 0.0,
    plugin: Optional[LocalLoopPlugin] = None,
    validation_slots: Optional[int] = None,
) -> tff.learning.templates.ClientWorkProcess:
  """Builds the shared local-training `ClientWorkProcess`.

  Args:
    model_spec: the model to train.
    client_optimizer: a `tff.learning.optimizers.Optimizer` for local steps.
    loss: the per-example loss, given the plug-in's context (the broadcast
      by default).
    proximal_strength: FedProx's mu >= 0; 0 is plain local SGD.
    plugin: the method's additions to the loop; None for none.
    validation_slots: the fixed cohort size K when clients should report
      their validation loss before and after training per slot (see the
      module docstring); None for plain training datasets.

  Returns:
    A `ClientWorkProcess` whose state is `OrderedDict(broadcast, report)`
    (the plug-in's server state and its report aggregator's state) and whose
    measurements are `OrderedDict(train=OrderedDict(loss, accuracy,
    num_examples), round_report=OrderedDict(label_counts=int64 [C],
    [validation_loss_before, validation_loss_after,] [extension])`.
  """
  if proximal_strength < 0:
    raise ValueError(f'proximal_strength must be >= 0, got {proximal_strength}')
  plugin = plugin or _no_plugin()
  weights_type = model_spec.weights_type()
  data_type = _client_data_type(model_spec, plugin, validation_slots)

  @compat.tf_computation
  def initial_broadcast():
    return tf.nest.map_structure(tf.constant, plugin.initial_broadcast())

  broadcast_type = initial_broadcast.type_signature.result

  @compat.tf_computation(broadcast_type, weights_type, data_type)
  def client_update(broadcast, initial_weights, dataset):
    teacher = model_spec.build_keras() if TEACHER in plugin.needs else None
    local_update = _build_local_update(
        model_spec.build_keras(), client_optimizer, loss, proximal_strength,
        model_spec.num_classes, plugin, validation_slots, teacher=teacher)
    return local_update(initial_weights, dataset, broadcast)

  client_result_type, train_sums_type, report_type = (
      client_update.type_signature.result)
  del client_result_type
  report_factory = plugin.report_factory or tff.aggregators.SumFactory()
  report_process = report_factory.create(report_type)

  @compat.tf_computation(train_sums_type)
  def finalize_train_metrics(sums):
    num_examples = tf.cast(sums['num_examples'], tf.float32)
    return collections.OrderedDict(
        loss=tf.math.divide_no_nan(sums['loss_sum'], num_examples),
        accuracy=tf.math.divide_no_nan(
            tf.cast(sums['num_correct'], tf.float32), num_examples),
        num_examples=sums['num_examples'])

  # A report factory may return another type than it receives (CReFF's
  # returns the re-trained classifier, not gradients).
  aggregated_report_type = report_process.next.type_signature.result.result

  @compat.tf_computation(broadcast_type, aggregated_report_type.member)
  def update_broadcast(broadcast, aggregated_report):
    if plugin.update_broadcast is None:
      return broadcast
    return plugin.update_broadcast(broadcast,
                                      aggregated_report.get('extension'))

  @compat.federated_computation
  def init_fn():
    return tff.federated_zip(
        collections.OrderedDict(
            broadcast=tff.federated_eval(initial_broadcast, tff.SERVER),
            report=report_process.initialize()))

  @compat.federated_computation(
      init_fn.type_signature.result,
      tff.FederatedType(weights_type, tff.CLIENTS),
      tff.FederatedType(data_type, tff.CLIENTS))
  def next_fn(state, weights, client_data):
    broadcast_at_clients = tff.federated_broadcast(state.broadcast)
    client_result, train_sums, report = tff.federated_map(
        client_update, (broadcast_at_clients, weights, client_data))
    train_metrics = tff.federated_map(finalize_train_metrics,
                                      tff.federated_sum(train_sums))
    report_output = report_process.next(state.report, report)
    new_broadcast = tff.federated_map(
        update_broadcast, (state.broadcast, report_output.result))
    new_state = tff.federated_zip(
        collections.OrderedDict(
            broadcast=new_broadcast, report=report_output.state))
    measurements = tff.federated_zip(
        collections.OrderedDict(
            train=train_metrics,
            round_report=report_output.result))
    return tff.templates.MeasuredProcessOutput(new_state, client_result,
                                               measurements)

  return tff.learning.templates.ClientWorkProcess(init_fn, next_fn)
