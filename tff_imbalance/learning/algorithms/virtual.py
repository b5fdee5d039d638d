"""VIRTUAL (Corinzia, Beuret and Buhmann, "Variational Federated Multi-Task
Learning", 2019), the testbed of Fed-Focal (seeds/000 sec. 4), as a
LearningProcess.

The server and the clients form a star-shaped Bayesian network over the
model's weights. Every weight has a mean-field Gaussian posterior written in
natural parameters eta = (gamma, lambda) = (mu * lambda, 1 / sigma^2), so
that products and ratios of Gaussians are sums and differences of eta. The
server holds the posterior s; client k holds its own factor t_k (its share of
s). In a round the cohort's clients refine s one after another, each
training its factor against the posterior the previous one left
(`--virtual_refinement=sequential`), or, as the reference implementation's
loop does (`lucori/virtual`, `source/fed_process.py`), all from the same s
with the server adding their changes at the end (`parallel`). The client
math follows the reference's `source/natural_raparametrization_layer.py`;
docs/virtual.md lists what differs and measures both orders. (The VIRTUAL
paper is not among the seeds, so the docstrings cite the reference code's
functions, not equation numbers.)
"""

import collections
import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf

from tff_imbalance import compat
from tff_imbalance import errors
from tff_imbalance import losses
from tff_imbalance.learning import method
from tff_imbalance.learning import options as options_lib
from tff_imbalance.learning import selection
from tff_imbalance.learning.algorithms import fedfocal
from tff_imbalance.models import spec as spec_lib

tff = compat.tff

# `VirtualOptions.refinement`.
PARALLEL, SEQUENTIAL = 'parallel', 'sequential'
# The reference's `NonNegPrec`: a factor's precision below this becomes 0.
PRECISION_FLOOR = 1e-6
# Tags of the stateless seeds: client factors' initial draws, weight samples.
_INIT_SEED_TAG = 31
_SAMPLE_SEED_TAG = 32


def _selects_by_psi(options: 'VirtualOptions') -> bool:
  return options.psi > 0


@dataclasses.dataclass(frozen=True)
class VirtualOptions:
  """VIRTUAL's hyperparameters (defaults: `configurations/mnist_virtual.json`
  of the reference, one point of its grid where it gives a grid).

  Attributes:
    natural_lr: the SGD step on a client's natural parameters, divided by the
      client's weight w_k = n_k / N (the reference's `natural_lr` learning
      rate multiplier; grid 1e8 .. 2e9).
    kl_weight: weight of KL(q_k || p_k) / n_k in the client loss (grid 0 ..
      1e-2).
    damping: d in t_k <- d t_k + (1 - d) t_k^old after local training;
      negative takes the reference's default 1 - server learning rate.
    prior_precision: precision of the zero-mean Gaussian prior factor.
    loc_init_std: standard deviation of the initial factor means (`loc_init`
      [0, 0.5]).
    scale_init: mean and standard deviation of the initial factors'
      untransformed scale u, sigma = softplus(u) (`scale_init` [-4.85, 0.45]).
    psi: share of last round's improved clients kept in the next cohort
      (Fed-Focal's selection, 000 eqs. 7-13); 0 is uniform sampling.
    refinement: 'sequential' (the cohort's clients one after another in a
      fixed order, the server posterior refined after each: the paper's
      order, and the default) or 'parallel' (every cohort client refines
      the same server posterior and the server adds their changes: the
      reference code's `fed_process.fit`; docs/virtual.md measures both).
    psi_improvement: Fed-Focal's reading of "improved" (docs/fedfocal.md).
  """
  FLAG_PREFIX = 'virtual_'
  natural_lr: float = options_lib.option(
      1e9, 'VIRTUAL step on the natural parameters (> 0; the reference\'s '
      'natural_lr, grid 1e8..2e9), divided by the client\'s weight n_k / N.')
  kl_weight: float = options_lib.option(
      1e-4, 'VIRTUAL weight of KL(q_k || p_k) / n_k in the client loss (>= 0; '
      'the reference\'s grid 0..1e-2).')
  damping: float = options_lib.option(
      -1.0, 'VIRTUAL damping d of the client factor after training, in [0, 1]; '
      'negative: the reference\'s default 1 - server learning rate.')
  prior_precision: float = options_lib.option(
      1.0, 'VIRTUAL precision of the zero-mean Gaussian prior factor (> 0).')
  loc_init_std: float = options_lib.option(
      0.5, 'VIRTUAL std of the client factors\' initial means (>= 0).')
  scale_init: tuple[float, ...] = options_lib.option(
      (-4.85, 0.45), 'VIRTUAL mean,std of the client factors\' initial '
      'untransformed scale u (sigma = softplus(u)).')
  refinement: str = options_lib.option(
      SEQUENTIAL, 'VIRTUAL within a round: each cohort client from the '
      'posterior the previous one left (sequential, the paper\'s order) or '
      'every client from the same posterior, then their summed changes '
      '(parallel, the reference code\'s loop; docs/virtual.md).',
      choices=(PARALLEL, SEQUENTIAL))
  psi: float = options_lib.option(
      0.0, 'share of last round\'s improved clients kept (000 eqs. 7-13), '
      'in [0, 1]; 0 is uniform sampling.', flag='psi')
  psi_improvement: str = options_lib.option(
      selection.GLOBAL, 'the reading of "improved" (docs/fedfocal.md).',
      flag='psi_improvement', choices=selection.IMPROVEMENTS,
      applies_if=(_selects_by_psi, '--psi > 0'))

  def __post_init__(self):
    options_lib.require(self, 'natural_lr', self.natural_lr > 0, '> 0')
    options_lib.require(self, 'kl_weight', self.kl_weight >= 0, '>= 0')
    options_lib.require(self, 'damping', self.damping <= 1,
                        '<= 1 (negative: 1 - server learning rate)')
    options_lib.require(self, 'prior_precision', self.prior_precision > 0,
                        '> 0')
    options_lib.require(self, 'loc_init_std', self.loc_init_std >= 0, '>= 0')
    options_lib.require(self, 'scale_init', len(self.scale_init) == 2 and
                        self.scale_init[1] >= 0, 'two numbers, mean,std >= 0')
    selection.check_psi(self.psi)
    options_lib.check_choices(self)

  def damping_for(self, server_lr: float) -> float:
    return self.damping if self.damping >= 0 else 1.0 - server_lr


# ---------------------------------------------------------------------------
# Gaussians in natural parameters.


def natural_kl(gamma_q, precision_q, gamma_p, precision_p) -> tf.Tensor:
  """KL(q || p) of mean-field Gaussians in natural parameters, summed.

  With mu = gamma / lambda: 1/2 sum [lambda_p / lambda_q + lambda_p (mu_q -
  mu_p)^2 - 1 + log(lambda_q / lambda_p)]. (The reference's
  `_kl_normal_natural` divides gamma_p by lambda_q instead of lambda_p; see
  docs/virtual.md.)
  """
  mean_q, mean_p = gamma_q / precision_q, gamma_p / precision_p
  return 0.5 * tf.reduce_sum(
      precision_p / precision_q + precision_p * tf.square(mean_q - mean_p)
      - 1.0 + tf.math.log(precision_q) - tf.math.log(precision_p))


def initial_factor(shape, loc_std: float, scale_init, seed) -> tuple:
  """The reference's `natural_initializer_fn`: mu ~ N(0, loc_std), u ~
  N(scale_init), lambda = 1 / softplus(u)^2, gamma = mu lambda."""
  loc_seed, scale_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))
  loc = loc_std * tf.random.stateless_normal(shape, seed=loc_seed)
  untransformed = scale_init[0] + scale_init[1] * tf.random.stateless_normal(
      shape, seed=scale_seed)
  precision = 1.0 / tf.square(tf.math.softplus(untransformed))
  return loc * precision, precision


def sample_seed(seed: int, round_num, client_index, step) -> tf.Tensor:
  """The stateless seed of client k's weight draw at local step j of round r:
  a function of (seed, r, k, j) alone."""
  fold = tf.random.experimental.stateless_fold_in
  return fold(fold(fold(tf.constant([seed, _SAMPLE_SEED_TAG]), round_num),
                   client_index), step)


def sample_weights(gamma, precision, seed) -> list[tf.Tensor]:
  """One reparameterised draw W = mu + eps / sqrt(lambda), eps ~ N(0, I), of
  every weight (the reference's `DenseReparameterization`: one draw per
  forward pass, i.e. per mini-batch)."""
  return [g / p + tf.random.stateless_normal(
      tf.shape(g), seed=tf.random.experimental.stateless_fold_in(seed, i))
          * tf.math.rsqrt(p) for i, (g, p) in enumerate(zip(gamma, precision))]


# ---------------------------------------------------------------------------
# The model: a stack of Dense layers run on sampled weights.


def forward_plan(model: tf.keras.Model) -> list[tuple[str, Any, int]]:
  """(kind, activation, number of weights) per layer of a Dense-stack model.

  Raises:
    errors.UserInputError: for a layer other than Flatten/Dense, or a model
      with non-trainable weights.
  """
  plan = []
  for layer in model.layers:
    if isinstance(layer, tf.keras.layers.InputLayer):
      continue
    if isinstance(layer, tf.keras.layers.Flatten):
      plan.append(('flatten', None, 0))
    elif isinstance(layer, tf.keras.layers.Dense):
      plan.append(('dense', layer.activation, 2 if layer.use_bias else 1))
    else:
      raise errors.UserInputError(
          f'--algo=virtual puts a Gaussian on every weight of a stack of '
          f'Dense layers (the reference\'s MLP); layer {layer.name!r} '
          f'({type(layer).__name__}) is not one: use --model=mlp or '
          '--model=mlp100.')
  if model.non_trainable_weights:
    raise errors.UserInputError(
        '--algo=virtual needs a model without non-trainable weights: use '
        '--model=mlp or --model=mlp100.')
  return plan


def forward(plan, weights, inputs) -> tf.Tensor:
  """The logits of `inputs` under one draw `weights` of the model's weights."""
  x, position = inputs, 0
  for kind, activation, count in plan:
    if kind == 'flatten':
      x = tf.reshape(x, [tf.shape(x)[0], -1])
      continue
    x = tf.matmul(x, weights[position])
    if count == 2:
      x = x + weights[position + 1]
    x = activation(x)
    position += count
  return x


# ---------------------------------------------------------------------------
# The process.

CLIENT_INDEX = 'client_index'  # `federated.CLIENT_INDEX`: the runner fills it.


def _one_element(dataset: tf.data.Dataset) -> tf.Tensor:
  """The value of a one-element int32 dataset (client data are sequences)."""
  return dataset.reduce(tf.constant(0, tf.int32), lambda total, k: total + k)


def build_virtual(
    model_spec: spec_lib.ModelOrFactory,
    client_sizes: np.ndarray,
    *,
    clients_per_round: int,
    server_lr: float = 0.5,
    options: VirtualOptions = VirtualOptions(),
    loss: losses.PerExampleLoss = losses.cross_entropy,
    validation_slots: int | None = None,
    seed: int = 0,
) -> tff.learning.templates.LearningProcess:
  """VIRTUAL: variational federated multi-task learning (Corinzia et al.).

  Every weight has a Gaussian posterior in natural parameters eta = (mu
  lambda, lambda). The server posterior is s; client k (weight w_k = n_k / N,
  N the population's examples) keeps a factor t_k. Initially t_k^0 is the
  reference's random draw (`VirtualOptions.loc_init_std`, `scale_init`) and
  s^0 = sum_k w_k t_k^0. Round r, for each client k of the cohort, from s
  as the previous client left it (sequential) or as the round began
  (parallel):

  * c_k = t_k (its factor on arrival). Its posterior and prior are the cavity
    s - w_k c_k times its factor, resp. a zero-mean prior factor, each to
    the power w_k (the reference's `renormalize_natural_mean_field_normal_fn`
    and `natural_tensor_multivariate_normal_fn`):
    q_k = s + w_k (t_k - c_k),  p_k = s - w_k c_k + w_k (0, lambda_0);
  * it minimises, over t_k, per mini-batch B, the negative ELBO estimate
    mean_{i in B} loss(y_i, f(x_i; W)) + beta KL(q_k || p_k) / n_k with one
    reparameterised draw W ~ q_k per batch (`loss` cross-entropy or
    Fed-Focal's focal loss), by SGD t_k <- t_k - (alpha / w_k) grad, alpha =
    `natural_lr`, precision components below 1e-6 set to 0 (`NonNegPrec`),
    for the round's local epochs;
  * damping: t_k <- d t_k + (1 - d) c_k, d = `damping` (default 1 - eta_s);
  * the server adds the client's posterior change (the reference's
    `aggregate_deltas_single_layer` with weights eta_s n_k / N):
    s <- s + eta_s w_k (t_k - c_k), after each client (sequential) or summed
    over the cohort at the end (parallel), and keeps t_k for client k's next
    round (a per-client table: the clients' state in this simulation).

  The model the process exposes (`get_model_weights`, evaluated by the
  runner) is the posterior mean mu = gamma / lambda of s.

  Args:
    model_spec: a stack of Flatten/Dense layers (`forward_plan`), e.g.
      `--model=mlp100` (000 sec. 4.2: two hidden layers of 100 units).
    client_sizes: [N] training examples per client of the population.
    clients_per_round: the cohort size K (fixed).
    server_lr: eta_s (the reference's `server_learning_rate`).
    options: VIRTUAL's hyperparameters.
    loss: the per-example data loss (CE; focal for Virtual(FFL)).
    validation_slots: with psi selection, the cohort size K: clients then
      report their validation loss under the posterior mean before and after
      training, per slot (`selection.PsiSelector`).
    seed: seeds the factors' initial draws and the weight samples.

  Returns:
    A `tff.learning.templates.LearningProcess` whose client data carries
    each client's population index (`client_index`).
  """
  model_spec = spec_lib.as_model_spec(model_spec)
  keras_model = model_spec.build_keras()
  plan = forward_plan(keras_model)
  shapes = [tuple(w.shape) for w in keras_model.trainable_weights]
  sizes = np.asarray(client_sizes, np.float64)
  if sizes.ndim != 1 or sizes.size == 0 or np.any(sizes <= 0):
    raise errors.UserInputError(
        f'--algo=virtual needs every client to hold training examples (client '
        f'sizes {sizes.tolist()[:8]}...).')
  num_clients, cohort = int(sizes.size), int(clients_per_round)
  client_weights = (sizes / sizes.sum()).astype(np.float32)
  client_sizes32 = sizes.astype(np.float32)
  damping = options.damping_for(server_lr)
  natural_lr, kl_weight = options.natural_lr, options.kl_weight
  prior_precision = options.prior_precision
  batch_spec = model_spec.batch_spec

  @compat.tf_computation
  def initialize_server():
    factors_gamma, factors_precision = [], []
    for i, shape in enumerate(shapes):
      gamma, precision = initial_factor(
          (num_clients, *shape), options.loc_init_std, options.scale_init,
          tf.constant([seed, _INIT_SEED_TAG * 1000 + i]))
      factors_gamma.append(gamma)
      factors_precision.append(precision)
    weights = tf.constant(client_weights)

    def weighted_sum(factors):
      return [tf.tensordot(weights, f, axes=1) for f in factors]

    return collections.OrderedDict(
        gamma=weighted_sum(factors_gamma),
        precision=weighted_sum(factors_precision),
        factors_gamma=factors_gamma, factors_precision=factors_precision,
        round_num=tf.constant(0, tf.int32))

  state_type = initialize_server.type_signature.result

  @compat.tf_computation(state_type, tff.TensorType(np.float32, [num_clients]))
  def cohort_rows(server, members):
    # The cohort's population indices in increasing order (exactly K ones)
    # and their factors, for the server's own use.
    ids = tf.cast(tf.argsort(-members, stable=True)[:cohort], tf.int32)
    return collections.OrderedDict(
        gamma=server['gamma'], precision=server['precision'], ids=ids,
        rows_gamma=[tf.gather(f, ids) for f in server['factors_gamma']],
        rows_precision=[tf.gather(f, ids)
                        for f in server['factors_precision']],
        round_num=server['round_num'])

  cohort_type = cohort_rows.type_signature.result

  def validation_loss(gamma, precision, dataset):
    weights = [g / p for g, p in zip(gamma, precision)]
    total, count = tf.constant(0.0), tf.constant(0.0)
    for batch in iter(dataset):
      per_example = loss(batch['y'], forward(plan, weights, batch['x']), ())
      total += tf.reduce_sum(per_example)
      count += tf.cast(tf.size(per_example), tf.float32)
    return tf.math.divide_no_nan(total, count)

  def train_factor(gamma_s, precision_s, old_gamma, old_precision, k,
                   round_num, train, validation, slot):
    """Client k's damped factor change from posterior s and factor c_k, its
    weighted posterior change and its totals (a client with an empty
    `train` changes nothing and totals zero)."""
    weight = tf.gather(tf.constant(client_weights), k)
    examples = tf.gather(tf.constant(client_sizes32), k)
    cavity_gamma = [s - weight * c for s, c in zip(gamma_s, old_gamma)]
    cavity_precision = [s - weight * c
                        for s, c in zip(precision_s, old_precision)]
    prior_precision_ = [c + weight * prior_precision for c in cavity_precision]
    step_size = natural_lr / weight

    def posterior(gamma, precision):
      return ([c + weight * t for c, t in zip(cavity_gamma, gamma)],
              [c + weight * t for c, t in zip(cavity_precision, precision)])

    gamma, precision = list(old_gamma), list(old_precision)
    step = tf.constant(0, tf.int32)
    loss_sum, correct, count = (tf.constant(0.0), tf.constant(0.0),
                                tf.constant(0.0))
    for batch in iter(train):
      with tf.GradientTape() as tape:
        tape.watch([gamma, precision])
        q_gamma, q_precision = posterior(gamma, precision)
        weights = sample_weights(q_gamma, q_precision, sample_seed(
            seed, round_num, k, step))
        logits = forward(plan, weights, batch['x'])
        per_example = loss(batch['y'], logits, ())
        data_loss = tf.reduce_mean(per_example)
        kl = tf.add_n([natural_kl(qg, qp, c, pp) for qg, qp, c, pp in zip(
            q_gamma, q_precision, cavity_gamma, prior_precision_)])
        objective = data_loss + kl_weight * kl / examples
      gamma_grads, precision_grads = tape.gradient(objective,
                                                   [gamma, precision])
      gamma = [g - step_size * d for g, d in zip(gamma, gamma_grads)]
      precision = [p - step_size * d for p, d in zip(precision,
                                                     precision_grads)]
      precision = [tf.where(p >= PRECISION_FLOOR, p, tf.zeros_like(p))
                   for p in precision]
      batch_size = tf.cast(tf.shape(batch['y'])[0], tf.float32)
      loss_sum += data_loss * batch_size
      correct += tf.reduce_sum(tf.cast(
          tf.equal(tf.argmax(logits, axis=1), batch['y']), tf.float32))
      count += batch_size
      step += 1

    delta_gamma = [damping * (t - c) for t, c in zip(gamma, old_gamma)]
    delta_precision = [damping * (t - c)
                       for t, c in zip(precision, old_precision)]
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(d))
                            for d in delta_gamma + delta_precision])
    delta_gamma = [tf.where(finite, d, tf.zeros_like(d)) for d in delta_gamma]
    delta_precision = [tf.where(finite, d, tf.zeros_like(d))
                       for d in delta_precision]
    totals = collections.OrderedDict(
        train=collections.OrderedDict(loss=loss_sum, correct=correct,
                                      num_examples=count),
        non_finite_clients=tf.where(
            tf.logical_and(count > 0, tf.logical_not(finite)), 1.0, 0.0))
    if validation is not None:
      slot_one_hot = tf.one_hot(slot, validation_slots, dtype=tf.float32)
      before = validation_loss(gamma_s, precision_s, validation)
      after_gamma, after_precision = posterior(
          [c + d for c, d in zip(old_gamma, delta_gamma)],
          [c + d for c, d in zip(old_precision, delta_precision)])
      after = validation_loss(after_gamma, after_precision, validation)
      totals['validation_loss_before'] = slot_one_hot * before
      totals['validation_loss_after'] = slot_one_hot * after
    return collections.OrderedDict(
        posterior_gamma=[weight * d for d in delta_gamma],
        posterior_precision=[weight * d for d in delta_precision],
        factor_gamma=delta_gamma, factor_precision=delta_precision,
        totals=totals)

  sequence_type = tff.SequenceType(compat.tensorflow_to_type(batch_spec))
  index_type = tff.SequenceType(tff.TensorType(np.int32))
  fields = [('train', sequence_type)]
  if validation_slots:
    fields += [('validation', sequence_type), ('slot', index_type)]
  fields += [(CLIENT_INDEX, index_type)]
  client_data_type = tff.StructWithPythonType(fields, collections.OrderedDict)

  def in_row(position, delta):
    # `delta` in row `position` of a [K, ...] stack of zeros.
    one_hot = tf.one_hot(position, cohort, dtype=delta.dtype)
    return tf.reshape(one_hot, [cohort] + [1] * len(delta.shape)) * delta

  def client_fields(data):
    validation = data['validation'] if validation_slots else None
    slot = _one_element(data['slot']) if validation_slots else None
    return _one_element(data[CLIENT_INDEX]), data['train'], validation, slot

  @compat.tf_computation(client_data_type)
  def client_membership(data):
    return tf.one_hot(_one_element(data[CLIENT_INDEX]), num_clients,
                      dtype=tf.float32)

  # Parallel: every client receives s and the cohort's rows, finds its own
  # and returns its factor change in its row of a [K, ...] stack.
  @compat.tf_computation(cohort_type, client_data_type)
  def parallel_client(received, data):

    @tf.function
    def run(received, data):
      k, train, validation, slot = client_fields(data)
      position = tf.argmax(tf.cast(tf.equal(received['ids'], k), tf.int32),
                           output_type=tf.int32)
      result = train_factor(
          received['gamma'], received['precision'],
          [r[position] for r in received['rows_gamma']],
          [r[position] for r in received['rows_precision']], k,
          received['round_num'], train, validation, slot)
      for name in ('factor_gamma', 'factor_precision'):
        result[name] = [in_row(position, d) for d in result[name]]
      return result

    return run(received, data)

  # Sequential: step i sends s as refined so far and the factor of the
  # cohort's i-th client; that client trains, the others see no batches.
  def step_broadcast_at(position: int):
    # One computation per position: a constant inside, not a federated
    # literal (the in-process path runs no Literal blocks).

    @compat.tf_computation(cohort_type)
    def step_broadcast(sent):
      return collections.OrderedDict(
          gamma=sent['gamma'], precision=sent['precision'],
          row_gamma=[r[position] for r in sent['rows_gamma']],
          row_precision=[r[position] for r in sent['rows_precision']],
          active=sent['ids'][position], round_num=sent['round_num'])

    return step_broadcast

  step_type = step_broadcast_at(0).type_signature.result

  @compat.tf_computation(step_type, client_data_type)
  def sequential_client(received, data):

    @tf.function
    def run(received, data):
      k, train, validation, slot = client_fields(data)
      taken = tf.where(tf.equal(k, received['active']),
                       tf.constant(-1, tf.int64), tf.constant(0, tf.int64))
      return train_factor(
          received['gamma'], received['precision'], received['row_gamma'],
          received['row_precision'], k, received['round_num'],
          train.take(taken),
          None if validation is None else validation.take(taken), slot)

    return run(received, data)

  parallel_type = parallel_client.type_signature.result
  sequential_type = sequential_client.type_signature.result

  def refined(sent, summed):
    # The server's refinement by the clients' summed posterior changes.
    sent = collections.OrderedDict(sent)
    sent['gamma'] = [s + server_lr * d for s, d in zip(
        sent['gamma'], summed['posterior_gamma'])]
    sent['precision'] = [s + server_lr * d for s, d in zip(
        sent['precision'], summed['posterior_precision'])]
    return sent

  @compat.tf_computation(cohort_type, parallel_type)
  def apply_parallel(sent, summed):
    return (refined(sent, summed), summed['factor_gamma'],
            summed['factor_precision'], summed['totals'])

  def apply_step_at(position: int):

    @compat.tf_computation(cohort_type, sequential_type)
    def apply_step(sent, summed):
      # The active client's factor change goes to row `position` of the
      # round's change stacks.
      return (refined(sent, summed),
              [in_row(position, d) for d in summed['factor_gamma']],
              [in_row(position, d) for d in summed['factor_precision']],
              summed['totals'])

    return apply_step

  stacks_type = apply_parallel.type_signature.result

  @compat.tf_computation(stacks_type)
  def _first(result):
    return result[0]

  @compat.tf_computation(stacks_type, stacks_type)
  def add_steps(first, second):
    # The posterior is the later step's; the changes and totals add up.
    return (second[0],) + tuple(tf.nest.map_structure(tf.add, a, b)
                                for a, b in zip(first[1:], second[1:]))

  @compat.tf_computation(state_type, stacks_type)
  def end_round(server, result):
    refined, rows_gamma, rows_precision, totals = result
    ids = refined['ids'][:, None]
    new = collections.OrderedDict(
        gamma=refined['gamma'], precision=refined['precision'],
        factors_gamma=[tf.tensor_scatter_nd_add(f, ids, r) for f, r in zip(
            server['factors_gamma'], rows_gamma)],
        factors_precision=[tf.tensor_scatter_nd_add(f, ids, r) for f, r in zip(
            server['factors_precision'], rows_precision)],
        round_num=server['round_num'] + 1)
    train = totals['train']
    metrics = collections.OrderedDict(
        train=collections.OrderedDict(
            loss=tf.math.divide_no_nan(train['loss'], train['num_examples']),
            accuracy=tf.math.divide_no_nan(train['correct'],
                                           train['num_examples']),
            num_examples=tf.cast(train['num_examples'], tf.int64)),
        non_finite_clients=totals['non_finite_clients'])
    if validation_slots:
      metrics['round_report'] = collections.OrderedDict(
          validation_loss_before=totals['validation_loss_before'],
          validation_loss_after=totals['validation_loss_after'])
    return new, metrics

  @compat.federated_computation
  def init_fn():
    return tff.federated_eval(initialize_server, tff.SERVER)

  @compat.federated_computation(init_fn.type_signature.result,
                                tff.FederatedType(client_data_type,
                                                  tff.CLIENTS))
  def next_fn(state, client_data):
    members = tff.federated_sum(tff.federated_map(client_membership,
                                                  client_data))
    sent = tff.federated_map(cohort_rows, (state, members))
    if options.refinement == PARALLEL:
      summed = tff.federated_sum(tff.federated_map(
          parallel_client, (tff.federated_broadcast(sent), client_data)))
      result = tff.federated_map(apply_parallel, (sent, summed))
    else:
      # One cohort position after another (increasing population index),
      # each from the posterior the previous one left.
      result = None
      for position in range(cohort):
        step = tff.federated_broadcast(
            tff.federated_map(step_broadcast_at(position), sent))
        summed = tff.federated_sum(tff.federated_map(
            sequential_client, (step, client_data)))
        step_result = tff.federated_map(apply_step_at(position),
                                        (sent, summed))
        sent = tff.federated_map(_first, step_result)
        result = step_result if result is None else tff.federated_map(
            add_steps, (result, step_result))
    new_state, metrics = tff.federated_map(end_round, (state, result))
    return tff.learning.templates.LearningProcessOutput(
        new_state, tff.federated_zip(collections.OrderedDict(
            client_work=metrics)))

  weights_type = model_spec.weights_type()

  @compat.tf_computation(state_type)
  def posterior_mean(server):
    return tff.learning.models.ModelWeights(
        trainable=[g / p for g, p in zip(server['gamma'],
                                         server['precision'])],
        non_trainable=[])

  @compat.tf_computation(state_type, weights_type)
  def with_mean(server, weights):
    new = collections.OrderedDict(server)
    new['gamma'] = [w * p for w, p in zip(weights.trainable,
                                          server['precision'])]
    return new

  @compat.federated_computation(state_type)
  def get_model_weights(state):
    return posterior_mean(state)

  @compat.federated_computation(state_type, weights_type)
  def set_model_weights(state, weights):
    return with_mean(state, weights)

  return tff.learning.templates.LearningProcess(
      init_fn, next_fn, get_model_weights, set_model_weights)


def _build(model_spec, config, options, context):
  """VIRTUAL with the flagged loss (CE, or focal for Virtual(FFL))."""
  if context.client_sizes is None:
    raise errors.UserInputError(
        '--algo=virtual needs each client\'s training size '
        '(TaskContext.client_sizes); the tasks provide it.')
  return build_virtual(
      model_spec, context.client_sizes,
      clients_per_round=config.clients_per_round,
      server_lr=config.server_lr_or(0.5), options=options,
      loss=config.per_example_loss(),
      validation_slots=(config.clients_per_round
                        if _selects_by_psi(options) else None),
      seed=model_spec.seed)


def make_selector(options: VirtualOptions, config: method.AlgorithmConfig,
                  data, clients_per_round: int, seed: int,
                  model_spec: spec_lib.ModelSpec):
  """Fed-Focal's psi selection over VIRTUAL's posterior mean (psi > 0)."""
  return fedfocal.psi_selector(
      options.psi, options.psi_improvement, config.per_example_loss(), data,
      clients_per_round, seed, config.batch_size, model_spec)


VIRTUAL = method.Method(
    'virtual', _build, VirtualOptions, make_selector=make_selector,
    uses_validation=_selects_by_psi, dense_models_only=True,
    uses_client_optimizer=False)
