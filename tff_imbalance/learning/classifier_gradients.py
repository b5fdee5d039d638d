"""Closed-form per-class gradients of a linear softmax classifier.

For features h, a classifier z = h W + b (W: [d, C], Keras' kernel layout) and
the cross-entropy loss, the gradient of one example (h, y) is

  dL/dW = h (softmax(z) - e_y)^T,   dL/db = softmax(z) - e_y,

so the mean gradient over the examples of class c is

  g_W[c] = mean_{(h, y): y = c} h (softmax(h W + b) - e_c)^T     ([d, C])
  g_b[c] = mean_{(h, y): y = c} (softmax(h W + b) - e_c)          ([C])

These are RedGrape's local gradient prototypes (004 eq. 11) and CReFF's real
per-class classifier gradients (Shang et al. 2022, eq. 5), both taken in
closed form as the reference code does, with no gradient tape. A structure
`OrderedDict(values=OrderedDict(kernel=[C, d, C], bias=[C, C]), mask=[C])`
(`mask[c]` = 1.0 where class c had examples) is what
`aggregators.class_mean.ClassMeanFactory` averages over clients.
"""

import collections
from typing import Callable

import numpy as np
import tensorflow as tf

from tff_imbalance.models import builders


def class_gradient_sums(features: tf.Tensor, labels: tf.Tensor,
                        kernel: tf.Tensor, bias: tf.Tensor,
                        num_classes: int):
  """Per-class sums of the classifier's CE gradients, and the class counts.

  Args:
    features: [N, d] float32 features h.
    labels: [N] integer labels in [0, C).
    kernel: [d, C] classifier kernel W.
    bias: [C] classifier bias b.
    num_classes: C.

  Returns:
    `(kernel_sums [C, d, C], bias_sums [C, C], counts [C] float32)`.
  """
  member = tf.one_hot(labels, num_classes, dtype=features.dtype)  # [N, C]
  error = tf.nn.softmax(tf.matmul(features, kernel) + bias) - member
  kernel_sums = tf.einsum('nc,nd,nk->cdk', member, features, error)
  bias_sums = tf.einsum('nc,nk->ck', member, error)
  return kernel_sums, bias_sums, tf.reduce_sum(member, axis=0)


def mean_gradients(features: tf.Tensor, labels: tf.Tensor, kernel: tf.Tensor,
                   bias: tf.Tensor, num_classes: int):
  """The classifier's mean CE gradients over all examples (one SGD step's).

  The sum over classes of `class_gradient_sums` divided by N, without the
  per-class [C, d, C] intermediate: one [d, N] x [N, C] matmul, which keeps
  CReFF's thousands of re-training steps per round cheap.

  Args:
    features: [N, d] features h.
    labels: [N] integer labels in [0, C).
    kernel: [d, C] classifier kernel W.
    bias: [C] classifier bias b.
    num_classes: C.

  Returns:
    `(kernel_gradient [d, C], bias_gradient [C])`.
  """
  error = (tf.nn.softmax(tf.matmul(features, kernel) + bias) -
           tf.one_hot(labels, num_classes, dtype=features.dtype))
  count = tf.cast(tf.shape(features)[0], features.dtype)
  return (tf.matmul(features, error, transpose_a=True) / count,
          tf.reduce_sum(error, axis=0) / count)


def _as_prototypes(kernel_sums, bias_sums, counts):
  """Sums and counts -> per-class means with a presence mask."""
  return collections.OrderedDict(
      values=collections.OrderedDict(
          kernel=tf.math.divide_no_nan(kernel_sums, counts[:, None, None]),
          bias=tf.math.divide_no_nan(bias_sums, counts[:, None])),
      mask=tf.cast(counts > 0, tf.float32))


def class_mean_gradients(features: tf.Tensor, labels: tf.Tensor,
                         kernel: tf.Tensor, bias: tf.Tensor,
                         num_classes: int) -> collections.OrderedDict:
  """Per-class mean classifier gradients of one set of examples.

  Args:
    features: [N, d] features h.
    labels: [N] labels.
    kernel: [d, C] classifier kernel W.
    bias: [C] classifier bias b.
    num_classes: C.

  Returns:
    `OrderedDict(values=OrderedDict(kernel=[C, d, C], bias=[C, C]),
    mask=[C])`, zeros (and mask 0) for classes without examples.
  """
  return _as_prototypes(*class_gradient_sums(features, labels, kernel, bias,
                                             num_classes))


def block_class_mean_gradients(features: tf.Tensor, kernel: tf.Tensor,
                               bias: tf.Tensor,
                               num_classes: int) -> collections.OrderedDict:
  """`class_mean_gradients` of features laid out in C equal class blocks.

  Rows c*m .. (c+1)*m - 1 of `features` are the m examples of class c (as
  CReFF's federated features). The per-class sums are then one batched
  [d, m] x [m, C] matmul per class, C*m*d*C multiply-adds in all, instead
  of the C times larger one-hot einsum of `class_gradient_sums`.

  Args:
    features: [C*m, d] features, class c in block c.
    kernel: [d, C] classifier kernel W.
    bias: [C] classifier bias b.
    num_classes: C.

  Returns:
    `OrderedDict(kernel=[C, d, C], bias=[C, C])`, the per-class mean
    gradients (every class present).
  """
  blocks = tf.reshape(features, [num_classes, -1, features.shape[-1]])
  error = (tf.nn.softmax(tf.einsum('cmd,dk->cmk', blocks, kernel) + bias) -
           tf.eye(num_classes, dtype=features.dtype)[:, None, :])
  return collections.OrderedDict(
      kernel=tf.einsum('cmd,cmk->cdk', blocks, error) /
      tf.cast(tf.shape(blocks)[1], features.dtype),
      bias=tf.reduce_mean(error, axis=1))


def zero_prototypes(feature_dim: int,
                    num_classes: int) -> collections.OrderedDict:
  """The all-absent prototype structure (numpy zeros)."""
  return collections.OrderedDict(
      values=collections.OrderedDict(
          kernel=np.zeros([num_classes, feature_dim, num_classes],
                          np.float32),
          bias=np.zeros([num_classes, num_classes], np.float32)),
      mask=np.zeros([num_classes], np.float32))


def dataset_class_gradients(
    features_fn: Callable[[tf.Tensor], tf.Tensor], kernel: tf.Tensor,
    bias: tf.Tensor, dataset: tf.data.Dataset,
    num_classes: int) -> collections.OrderedDict:
  """Per-class mean classifier gradients over a dataset of `{'x', 'y'}`.

  Args:
    features_fn: maps a batch of inputs to features [B, d].
    kernel: [d, C] classifier kernel W.
    bias: [C] classifier bias b.
    dataset: batches with 'x' and 'y'.
    num_classes: C.

  Returns:
    The structure of `class_mean_gradients`, over the whole dataset.
  """
  kernel_sums = tf.zeros([num_classes, kernel.shape[0], num_classes])
  bias_sums = tf.zeros([num_classes, num_classes])
  counts = tf.zeros([num_classes])
  for batch in iter(dataset):
    k, b, n = class_gradient_sums(features_fn(batch['x']), batch['y'], kernel,
                                  bias, num_classes)
    kernel_sums += k
    bias_sums += b
    counts += n
  return _as_prototypes(kernel_sums, bias_sums, counts)


def model_class_gradients(model: tf.keras.Model, dataset: tf.data.Dataset,
                          num_classes: int) -> collections.OrderedDict:
  """Per-class gradients of `model`'s own classifier over `dataset`.

  The model runs in inference mode (no dropout), as the references compute
  their prototypes with the received model in eval mode.

  Args:
    model: a model from `models.builders` (or one that contains its layers,
      e.g. `models.two_stream`): features and the `classifier` layer are
      taken from it.
    dataset: batches with 'x' and 'y'.
    num_classes: C.

  Returns:
    The structure of `class_mean_gradients`.
  """
  features = builders.feature_extractor(model)
  classifier = builders.classifier_layer(model)
  return dataset_class_gradients(
      lambda x: features(x, training=False), classifier.kernel,
      classifier.bias, dataset, num_classes)
