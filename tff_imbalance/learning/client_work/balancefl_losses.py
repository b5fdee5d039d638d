"""BalanceFL's loss terms (Shuai et al., 003 secs. 5.2, 5.3.3, 5.4): pure TF.

Every function takes logits [B, C] and a class mask ([C] or [B, C], 1.0 for
the classes a term covers) and returns one value per example [B]; the local
loop averages over the batch (eq. 10: "the average over all losses of a batch
of inputs").

Softmaxes are taken over the masked classes only, as the reference code does
(`loss/LwFloss.py`, NOTES.md sec. 3): the distillation term compares teacher
and student on the absent classes renormalised among themselves, so it does
not depend on the activated logits that cross-entropy moves, and the CE and
smoothing terms see only activated classes. Eq. 4 as printed normalises the
tempered probabilities over all C classes before eq. 3 keeps the absent ones;
the renormalised form is what "only involves elements corresponding to absent
classes" (sec. 5.2) means for the gradients and what the authors ran.
"""

import tensorflow as tf

# Logit given to masked-out classes: exp() underflows to 0 in float32, and
# unlike -inf it keeps 0 * logit and the gradients finite.
_MASKED_LOGIT = -1e9


def _mask_like(mask: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
  return tf.broadcast_to(tf.cast(mask, logits.dtype), tf.shape(logits))


def masked_log_softmax(logits: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
  """log softmax over the classes where `mask` is 1; 0 elsewhere.

  Args:
    logits: [B, C].
    mask: [C] or [B, C], 1.0 for included classes.

  Returns:
    [B, C]: log probabilities among the included classes, 0 at excluded ones
    (and 0 everywhere in a row with no included class).
  """
  mask = _mask_like(mask, logits)
  log_probs = tf.nn.log_softmax(
      tf.where(mask > 0, logits, _MASKED_LOGIT), axis=-1)
  return tf.where(mask > 0, log_probs, 0.0)


def absent_class_distillation(student_logits: tf.Tensor,
                              teacher_logits: tf.Tensor, absent: tf.Tensor,
                              temperature: float) -> tf.Tensor:
  """Knowledge inheritance (003 eqs. 3-4) on the absent classes.

  With q'_j = softmax(z_j / T) over the absent classes j for the teacher
  (q-hat') and the student (q'), returns sum_j q-hat'_j (log q-hat'_j -
  log q'_j) = KL(q-hat' || q'): eq. 3's cross-entropy -sum_j q-hat'_j log q'_j
  minus the teacher's entropy, a constant of the student, so the gradients are
  eq. 3's; it is 0 exactly when the student matches the teacher there. No T^2
  factor (neither the paper nor the code has one). The teacher gets no
  gradient.

  Args:
    student_logits: [B, C].
    teacher_logits: [B, C] (the received global model's).
    absent: [C] or [B, C] mask of the absent classes.
    temperature: T > 0 (003 uses 2).

  Returns:
    [B] per-example distillation losses (0 for rows with no absent class).
  """
  teacher_logits = tf.stop_gradient(teacher_logits)
  teacher_log_probs = masked_log_softmax(teacher_logits / temperature, absent)
  student_log_probs = masked_log_softmax(student_logits / temperature, absent)
  teacher_probs = tf.exp(teacher_log_probs) * _mask_like(absent,
                                                         teacher_logits)
  return tf.reduce_sum(
      teacher_probs * (teacher_log_probs - student_log_probs), axis=-1)


def activated_cross_entropy(labels: tf.Tensor, logits: tf.Tensor,
                            activated: tf.Tensor) -> tf.Tensor:
  """Cross-entropy over the activated classes (003 eq. 8): -log q_y.

  Args:
    labels: [B] int labels, each an activated class.
    logits: [B, C].
    activated: [C] or [B, C] mask of the activated classes.

  Returns:
    [B] per-example losses.
  """
  log_probs = masked_log_softmax(logits, activated)
  return -tf.gather(log_probs, labels, axis=-1, batch_dims=1)


def activated_negative_entropy(logits: tf.Tensor,
                               activated: tf.Tensor) -> tf.Tensor:
  """The smooth regulariser (003 eq. 9): sum_{j activated} q_j log q_j.

  Minimising this negative entropy spreads the prediction over the activated
  classes, penalising over-confidence on the head classes, without touching
  the absent classes that knowledge inheritance keeps.

  Args:
    logits: [B, C].
    activated: [C] or [B, C] mask of the activated classes.

  Returns:
    [B] per-example values in [-log k, 0] for k activated classes.
  """
  log_probs = masked_log_softmax(logits, activated)
  probs = tf.exp(log_probs) * _mask_like(activated, logits)
  return tf.reduce_sum(probs * log_probs, axis=-1)
