"""Per-example classification losses on logits: pure TF, unit-tested.

Every loss here has the signature `loss(labels, logits, broadcast) -> [B]`:
labels int64 [B], logits float32 [B, C], and `broadcast` the algorithm's
extra server state sent to clients this round (class weights, priors, ...;
`()` when the algorithm has none). The shared local loop averages the
per-example values over the batch, so a loss never decides the reduction.
"""

from typing import Any, Callable

import tensorflow as tf

PerExampleLoss = Callable[[tf.Tensor, tf.Tensor, Any], tf.Tensor]


def cross_entropy(labels: tf.Tensor, logits: tf.Tensor,
                  broadcast: Any = ()) -> tf.Tensor:
  """Softmax cross-entropy -log p_y per example."""
  del broadcast  # Plain CE needs no server state.
  return tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=labels, logits=logits)
