"""MFE and MSFE losses in federated training, with their minority classes.

Mean false error (Wang et al., IJCNN 2016; `losses.mean_false_error`) splits
the classes into minority (Wang's positive class) and majority and averages
the squared error within each group, so that a few minority examples weigh
as much as the many majority ones. It needs to know which classes are the
minority. 002 (supplementary table 9) compares two sources in FL:

* MFE-L (`source='local'`): each client decides from its own label counts,
  all it can see. Under a mismatch between local and global imbalance a
  client whose classes are locally balanced finds no minority, and MFE
  falls back to MSE.
* MFE-G (`source='global'`): the composition monitor (002 sec 3.2,
  `learning.monitor`) estimates each round's class composition from the
  global model's update (eq. 8); the server accumulates the estimates and
  broadcasts the minority set with the model for the next round.

The same rule makes both sets: with shares s_c (a client's counts, or the
monitor's accumulated estimate, normalised to sum 1), class c is a minority
class when

    s_c < share / C,

i.e. below `share` times a balanced class's share (default 0.5: less than
half). 002 does not state its rule; this one is ours (docs/mfe.md). Before
the monitor's first estimate (round 1) MFE-G knows no minority: MFE is then
the mean squared error over the batch, MSFE its square.
"""

import collections
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from tff_imbalance import compat
from tff_imbalance import errors
from tff_imbalance.data import arrays
from tff_imbalance.learning import monitor
from tff_imbalance.learning.client_work import local_training
from tff_imbalance.models import spec as spec_lib

tff = compat.tff

MFE_LOSSES = ('mfe', 'msfe')
MINORITY_SOURCES = ('local', 'global')
DEFAULT_MINORITY_SHARE = 0.5


def check_minority_share(share: float) -> None:
  """Refuses a minority share outside (0, 1]."""
  if not 0 < share <= 1:
    raise errors.UserInputError(
        f'--mfe_minority_share must be in (0, 1] (got {share}): a class is a '
        'minority class below this fraction of a balanced class\'s share.')


def minority_mask(counts: tf.Tensor, share: float) -> tf.Tensor:
  """[C] float32, 1.0 for the classes whose share of `counts` is below
  `share` / C (see the module docstring); all 0 for all-zero counts."""
  counts = tf.cast(counts, tf.float32)
  num_classes = tf.cast(tf.shape(counts)[0], tf.float32)
  total = tf.reduce_sum(counts)
  below = counts < total * share / num_classes
  return tf.cast(tf.logical_and(below, total > 0), tf.float32)


def _label_counts(dataset: tf.data.Dataset, num_classes: int) -> tf.Tensor:
  counts = tf.zeros([num_classes], tf.int64)
  for batch in iter(dataset):
    counts += tf.reduce_sum(tf.one_hot(batch['y'], num_classes,
                                       dtype=tf.int64), axis=0)
  return counts


def local_minority_plugin(num_classes: int, share: float
                          ) -> local_training.LocalLoopPlugin:
  """MFE-L: each client's minority classes from its own label counts.

  `prepare` counts the client's labels (one pass over its round's batches,
  no model) and hands the mask to the loss as its context.
  """
  check_minority_share(share)

  def prepare(client: local_training.Client) -> local_training.Preparation:
    counts = _label_counts(client.train, num_classes)
    return local_training.Preparation(context=minority_mask(counts, share))

  return local_training.LocalLoopPlugin(
      # A scalar placeholder: MFE-L broadcasts nothing.
      initial_broadcast=lambda: np.zeros([], np.float32), prepare=prepare)


def broadcast_minority_plugin(
    num_classes: int, minority: Optional[Sequence[int]] = None
) -> local_training.LocalLoopPlugin:
  """The minority set broadcast by the server: fixed (`minority`, Wang et
  al.'s known positive classes) or, None, none until MFE-G's hook sets it.

  The broadcast is `OrderedDict(minority=[C] mask, estimate_sum=[C])`, the
  latter the monitor's accumulated composition estimates (MFE-G's state).
  """
  mask = np.zeros([num_classes], np.float32)
  if minority is not None:
    bad = [c for c in minority if not 0 <= c < num_classes]
    if bad:
      raise errors.UserInputError(
          f'minority classes must be in [0, {num_classes}) (got {bad}).')
    mask[list(minority)] = 1.0

  def prepare(client: local_training.Client) -> local_training.Preparation:
    return local_training.Preparation(context=client.broadcast['minority'])

  return local_training.LocalLoopPlugin(
      initial_broadcast=lambda: collections.OrderedDict(
          minority=mask, estimate_sum=np.zeros([num_classes], np.float32)),
      prepare=prepare)


def build_global_minority(
    process: tff.learning.templates.LearningProcess,
    model_spec: spec_lib.ModelSpec,
    aux: arrays.LabeledArrays,
    client_optimizer: tff.learning.optimizers.Optimizer,
    *,
    local_epochs: int,
    batch_size: int,
    share: float = DEFAULT_MINORITY_SHARE,
    threshold: float = monitor.DEFAULT_THRESHOLD,
) -> tff.learning.templates.LearningProcess:
  """MFE-G: `process` (built with `broadcast_minority_plugin()`) under the
  composition monitor, whose estimates set the broadcast minority set.

  After round t the monitor's estimate of the round's composition (002
  eq. 8, `monitor.estimate_composition`) is added to the broadcast's
  `estimate_sum`, and the minority set of round t+1 is `minority_mask(
  estimate_sum, share)`: the global imbalance as the monitor sees it,
  averaged over the rounds so far.

  Args:
    process: a local-training process whose plug-in is
      `broadcast_minority_plugin(C)`.
    model_spec: its model.
    aux: the server's auxiliary examples (the monitor's), every class.
    client_optimizer: the clients' optimizer (replayed by the monitor).
    local_epochs: the clients' local epochs.
    batch_size: the clients' batch size.
    share: the minority rule's fraction of a balanced share.
    threshold: T_Ra of the monitor's filter (002 eq. 7).

  Returns:
    The monitored process (`monitor.build_monitored_process`); the set used
    in the next round is `state['inner'].client_work['broadcast']['minority']`.
  """
  check_minority_share(share)
  monitor.check_aux_data(aux, "--loss=mfe/msfe with --mfe_minority=global")
  model_spec = spec_lib.as_model_spec(model_spec)
  inner_state_type = process.initialize.type_signature.result.member
  num_classes = model_spec.num_classes

  @compat.tf_computation(inner_state_type,
                         tff.TensorType(np.float32, [num_classes]), np.int32)
  def set_minority(state, composition, round_num):
    del round_num  # Every round's estimate counts alike.
    estimate_sum = state.client_work['broadcast']['estimate_sum'] + composition
    return local_training.with_broadcast(state, collections.OrderedDict(
        minority=minority_mask(estimate_sum, share),
        estimate_sum=estimate_sum))

  return monitor.build_monitored_process(
      process, model_spec, aux, client_optimizer, local_epochs=local_epochs,
      batch_size=batch_size, threshold=threshold, after_round=set_minority)
