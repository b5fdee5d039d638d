"""The one local-training client work that every custom algorithm plugs into.

Written once, parameterised by what algorithms change (TFF's own pattern in
`learning/templates/model_delta_client_work.py`):

* a per-example loss `loss(labels, logits, broadcast) -> [B]` (see `losses`);
* an optional proximal strength mu (FedProx, Li et al. 2020, eq. 2): the local
  objective is F_k(w) + mu/2 ||w - w^t||^2, so mu (w - w^t) is ADDED to every
  gradient, pulling the client towards the broadcast model w^t;
* an optional `ClientWorkExtension`: extra server state broadcast to clients
  each round (class weights, prototypes, priors), an extra per-client report
  computed on device, aggregated inside this client work by an embedded
  `tff.templates.AggregationProcess` (pattern A of DESIGN.md, as TFF's MIME
  does) and folded back into the broadcast state for the next round;
* for objectives that need more than labels and logits (BalanceFL), the
  extension may ask for a frozen teacher copy of the received model, a
  per-client `prepare_training` step (resample the dataset, compute per-client
  tensors) and a `batch_loss` that replaces the per-example loss in training.

Every client also reports its label histogram, summed over the round's cohort:
the true class composition of the round's training data, which the
composition monitor and the statistics need and which costs nothing.

With `validation_slots=K`, each client's data is `OrderedDict(train=...,
validation=..., slot=k)` (k its position in the round's cohort of fixed size
K, as a one-element dataset because TFF's client data must be sequences) and the client also reports its validation loss under the model it
received and under the model it sends back, as one-hot vectors over the K
slots; summed over the cohort they become per-slot vectors in the process's
measurements, which is how psi client selection (Fed-Focal, 000 eqs. 7-13)
learns which clients improved, computed inside the TFF computation.
`build_cohort_validation_loss` evaluates the same loss under the new global
model on last round's cohort (psi's default "global" reading).

An extension may also localise the broadcast on each client before training
(Balanced Softmax's local prior from the client's own counts), ask for each
client's population index with its data (CLIMB's per-client duals: the index
selects the client's dual and the slot of its report), report on the received
model before training, and rescale the client's aggregation weight.

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


@dataclasses.dataclass(frozen=True)
class ClientWorkExtension:
  """What an algorithm adds to local training beyond a loss.

  Attributes:
    initial_broadcast: no-arg callable returning the initial extra server state
      (a structure of numpy arrays) that is broadcast to every client.
    client_report: optional `(model, dataset, broadcast) -> structure of
      tensors`, run on each client after local training with the trained Keras
      model; its result is aggregated over the round's clients.
    report_factory: the unweighted aggregation factory for the reports
      (default: sum).
    update_broadcast: optional TF function `(broadcast, aggregated_report) ->
      new broadcast`, run on the server after aggregation.
    localize_broadcast: optional `(broadcast, dataset) -> client broadcast`,
      run on each client before local training: what the loss and the report
      then see (e.g. a prior from the client's own label counts).
    with_client_index: whether each client's data also carries its index k in
      the population (`OrderedDict(train=..., client_index=...)`, a
      one-element int32 dataset; the runner supplies it when the process's
      client data type asks for it); `client_report` and `update_weight` then
      get `client_index=k` as a keyword argument.
    report_before_training: run `client_report` on the received model before
      local training instead of on the trained model after it.
    with_evaluation: whether each client's data also carries `evaluation`
      (its training examples in one pass, `federated.EVALUATION`; the runner
      then passes every client of the population, those outside the cohort
      with an empty `train`); `client_report` then gets that dataset instead
      of the training one (CLIMB's f_k(w^t) on every client).
    update_weight: optional `(weight, broadcast[, client_index]) -> weight`
      rescaling the client's aggregation weight (its example count, or 0
      for a non-finite update).
    with_teacher: whether each client also builds a frozen copy of the model
      it received (a teacher, e.g. BalanceFL's knowledge inheritance); the two
      hooks below get it as `teacher` (None otherwise).
    prepare_training: optional `(model, teacher, dataset, broadcast[,
      client_index]) -> (dataset, label_counts, context)`, run on each client
      after `localize_broadcast` with the received weights: the dataset to
      train on (e.g. class-balanced resampling), the client's true [C] int64
      label counts (reported instead of the counts of the resampled batches)
      and per-client tensors `batch_loss` reads (e.g. a feature covariance).
    batch_loss: optional `(model, teacher, batch, broadcast, context,
      examples_seen) -> (per-example loss [B], logits [B, C])`, replacing
      `loss(batch['y'], model(batch['x']), broadcast)` in local training when
      the objective needs more than labels and logits (teacher outputs,
      features); `examples_seen` (int64, examples before this batch) makes
      per-step stateless randomness distinct. Validation losses still use
      `loss`.
    after_step: optional `(model, gradients, broadcast, context) -> None`,
      run after every local optimizer step with the gradients that step
      applied (aligned with `model.trainable_variables`): a further update of
      some variables (e.g. RedGrape's classifier re-balancing step, 004
      eq. 13).
  """
  initial_broadcast: Callable[[], Any]
  client_report: Optional[Callable[..., Any]] = None
  report_factory: Optional[tff.aggregators.UnweightedAggregationFactory] = None
  update_broadcast: Optional[Callable[[Any, Any], Any]] = None
  localize_broadcast: Optional[Callable[[Any, tf.data.Dataset], Any]] = None
  with_client_index: bool = False
  report_before_training: bool = False
  with_evaluation: bool = False
  update_weight: Optional[Callable[..., tf.Tensor]] = None
  with_teacher: bool = False
  prepare_training: Optional[Callable[..., Any]] = None
  batch_loss: Optional[Callable[..., Any]] = None
  after_step: Optional[Callable[..., None]] = None


def _no_extension() -> ClientWorkExtension:
  # A scalar placeholder keeps every TFF type non-empty.
  return ClientWorkExtension(initial_broadcast=lambda: np.zeros([], np.float32))


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


def _build_local_update(model: tf.keras.Model,
                        optimizer: tff.learning.optimizers.Optimizer,
                        loss: losses.PerExampleLoss, proximal_strength: float,
                        num_classes: int,
                        extension: ClientWorkExtension,
                        validation_slots: Optional[int],
                        teacher: Optional[tf.keras.Model] = None):
  """The client's tf.function: local epochs over `dataset`, then the report."""
  model_weights = tff.learning.models.ModelWeights.from_model(model)
  teacher_weights = (None if teacher is None else
                     tff.learning.models.ModelWeights.from_model(teacher))

  def mean_loss(dataset, broadcast):
    return evaluate_mean_loss(model, loss, dataset, broadcast)

  @tf.function
  def local_update(initial_weights, data, broadcast):
    tf.nest.map_structure(lambda v, t: v.assign(t), model_weights,
                          initial_weights)
    if teacher_weights is not None:
      tf.nest.map_structure(lambda v, t: v.assign(t), teacher_weights,
                            initial_weights)
    structured = (bool(validation_slots) or extension.with_client_index or
                  extension.with_evaluation)
    dataset = data['train'] if structured else data
    report_dataset = (data['evaluation'] if extension.with_evaluation else
                      dataset)
    index_kwargs = {}
    if extension.with_client_index:
      index_kwargs['client_index'] = _one_element(data['client_index'])
    if extension.localize_broadcast is not None:
      broadcast = extension.localize_broadcast(broadcast, dataset)
    if validation_slots:
      slot = tf.one_hot(_one_element(data['slot']), validation_slots,
                        dtype=tf.float32)
      validation_loss_before = mean_loss(data['validation'], broadcast)
    if extension.client_report is not None and extension.report_before_training:
      extension_report = extension.client_report(model, report_dataset,
                                                 broadcast,
                                                 **index_kwargs)
    train_dataset, true_label_counts, context = dataset, None, ()
    if extension.prepare_training is not None:
      train_dataset, true_label_counts, context = extension.prepare_training(
          model, teacher, dataset, broadcast, **index_kwargs)
    trainable = tuple(model_weights.trainable)
    anchor = tuple(tf.identity(t) for t in initial_weights.trainable)
    optimizer_state = optimizer.initialize(
        tuple(tf.TensorSpec(v.shape, v.dtype) for v in trainable))
    loss_sum = tf.constant(0.0, tf.float32)
    num_correct = tf.constant(0, tf.int64)
    num_examples = tf.constant(0, tf.int64)
    label_counts = tf.zeros([num_classes], tf.int64)
    for batch in iter(train_dataset):
      with tf.GradientTape() as tape:
        if extension.batch_loss is None:
          logits = model(batch['x'], training=True)
          per_example_loss = loss(batch['y'], logits, broadcast)
        else:
          per_example_loss, logits = extension.batch_loss(
              model, teacher, batch, broadcast, context, num_examples)
        batch_loss = tf.reduce_mean(per_example_loss)
      gradients = tape.gradient(batch_loss, trainable)
      if proximal_strength:
        gradients = tuple(
            g + proximal_strength * (w - w0)
            for g, w, w0 in zip(gradients, trainable, anchor))
      optimizer_state, new_weights = optimizer.next(
          optimizer_state, tuple(tf.identity(v) for v in trainable),
          gradients)
      for variable, value in zip(trainable, new_weights):
        variable.assign(value)
      if extension.after_step is not None:
        extension.after_step(model, gradients, broadcast, context)
      batch_size = tf.shape(batch['y'], out_type=tf.int64)[0]
      loss_sum += batch_loss * tf.cast(batch_size, tf.float32)
      predictions = tf.argmax(logits, axis=-1, output_type=tf.int64)
      num_correct += tf.reduce_sum(
          tf.cast(tf.equal(predictions, batch['y']), tf.int64))
      num_examples += batch_size
      label_counts += tf.reduce_sum(
          tf.one_hot(batch['y'], num_classes, dtype=tf.int64), axis=0)
    if true_label_counts is not None:
      label_counts = true_label_counts

    delta = tf.nest.map_structure(tf.subtract, list(initial_weights.trainable),
                                  list(model_weights.trainable))
    finite = tf.reduce_all(
        [tf.reduce_all(tf.math.is_finite(d)) for d in delta])
    delta = tf.nest.map_structure(
        lambda d: tf.where(finite, d, tf.zeros_like(d)), delta)
    update_weight = tf.where(finite, tf.cast(num_examples, tf.float32), 0.0)
    if extension.update_weight is not None:
      update_weight = extension.update_weight(update_weight, broadcast,
                                              **index_kwargs)
    train_sums = collections.OrderedDict(
        loss_sum=loss_sum, num_correct=num_correct, num_examples=num_examples)
    report = collections.OrderedDict(label_counts=label_counts)
    if validation_slots:
      report['validation_loss_before'] = slot * validation_loss_before
      report['validation_loss_after'] = slot * mean_loss(data['validation'],
                                                         broadcast)
    if extension.client_report is not None:
      if not extension.report_before_training:
        extension_report = extension.client_report(model, report_dataset,
                                                   broadcast,
                                                   **index_kwargs)
      report['extension'] = extension_report
    return (tff.learning.templates.ClientResult(
        update=delta, update_weight=update_weight), train_sums, report)

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
                                     _no_extension(), None)

  def train(initial_weights, dataset):
    client_result, _, _ = local_update(initial_weights, dataset,
                                       tf.constant(0.0))
    return client_result.update

  return train


def build_local_training_client_work(
    model_spec: spec_lib.ModelSpec,
    client_optimizer: tff.learning.optimizers.Optimizer,
    *,
    loss: losses.PerExampleLoss = losses.cross_entropy,
    proximal_strength: float = 0.0,
    extension: Optional[ClientWorkExtension] = None,
    validation_slots: Optional[int] = None,
) -> tff.learning.templates.ClientWorkProcess:
  """Builds the shared local-training `ClientWorkProcess`.

  Args:
    model_spec: the model to train.
    client_optimizer: a `tff.learning.optimizers.Optimizer` for local steps.
    loss: the per-example loss, given the extension's broadcast state.
    proximal_strength: FedProx's mu >= 0; 0 is plain local SGD.
    extension: extra broadcast state and client reports; None for none.
    validation_slots: the fixed cohort size K when clients should report
      their validation loss before and after training per slot (see the
      module docstring); None for plain training datasets.

  Returns:
    A `ClientWorkProcess` whose state is `OrderedDict(broadcast, report)`
    (the extension's server state and its report aggregator's state) and whose
    measurements are `OrderedDict(train=OrderedDict(loss, accuracy,
    num_examples), round_label_counts=int64 [C], extension_report=...)`.
  """
  if proximal_strength < 0:
    raise ValueError(f'proximal_strength must be >= 0, got {proximal_strength}')
  extension = extension or _no_extension()
  weights_type = model_spec.weights_type()
  data_type = tff.SequenceType(compat.tensorflow_to_type(model_spec.batch_spec))
  index_type = tff.SequenceType(tff.TensorType(np.int32))
  data_fields = [('train', data_type)]
  if validation_slots:
    data_fields += [('validation', data_type), ('slot', index_type)]
  if extension.with_evaluation:
    data_fields.append(('evaluation', data_type))
  if extension.with_client_index:
    data_fields.append(('client_index', index_type))
  if len(data_fields) > 1:
    data_type = tff.StructWithPythonType(data_fields, collections.OrderedDict)

  @compat.tf_computation
  def initial_broadcast():
    return tf.nest.map_structure(tf.constant, extension.initial_broadcast())

  broadcast_type = initial_broadcast.type_signature.result

  @compat.tf_computation(broadcast_type, weights_type, data_type)
  def client_update(broadcast, initial_weights, dataset):
    teacher = model_spec.build_keras() if extension.with_teacher else None
    local_update = _build_local_update(
        model_spec.build_keras(), client_optimizer, loss, proximal_strength,
        model_spec.num_classes, extension, validation_slots, teacher=teacher)
    return local_update(initial_weights, dataset, broadcast)

  client_result_type, train_sums_type, report_type = (
      client_update.type_signature.result)
  del client_result_type
  report_factory = extension.report_factory or tff.aggregators.SumFactory()
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
    if extension.update_broadcast is None:
      return broadcast
    return extension.update_broadcast(broadcast,
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
