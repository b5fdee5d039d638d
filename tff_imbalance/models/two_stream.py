"""RedGrape's two-stream classifier head (004 sec 3.3, Figure 1).

A model from `builders` is h = f(x; P) followed by the classifier W
(`classifier` layer). The two-stream model adds a supplementary classifier
W_hat (a Dense layer named `SUPPLEMENTARY_LAYER`) on the same features and
trains on the summed logits z = W^T h + W_hat^T h (004 sec 3.4.1); inference
uses W alone (eq. 16), i.e. the plain model. The two-stream model contains the
plain model's layers themselves, so `builders.classifier_layer` and
`builders.feature_extractor` work on it unchanged.

W_hat starts at zero, so the two-stream model starts as the plain model.
"""

import dataclasses

import tensorflow as tf

from tff_imbalance.models import builders
from tff_imbalance.models import spec as spec_lib

SUPPLEMENTARY_LAYER = 'supplementary_classifier'


def build_two_stream(plain: tf.keras.Model) -> tf.keras.Model:
  """Adds the supplementary classifier W_hat to a plain functional model.

  Args:
    plain: a model from `builders` (features, then the `classifier` layer).

  Returns:
    A model with the same inputs whose logits are W^T h + W_hat^T h.
  """
  classifier = builders.classifier_layer(plain)
  supplementary = tf.keras.layers.Dense(
      classifier.units, kernel_initializer='zeros', bias_initializer='zeros',
      name=SUPPLEMENTARY_LAYER)(classifier.input)
  logits = tf.keras.layers.Add(name='two_stream_logits')(
      [plain.output, supplementary])
  model = tf.keras.Model(inputs=plain.inputs, outputs=logits,
                         name=f'{plain.name}_two_stream')
  # The plain model's head keeps its (possibly user-chosen) name here.
  return builders.mark_classifier(model, classifier.name)


def plain_trainable_indices(model: tf.keras.Model) -> list[int]:
  """Positions of the plain model's trainable variables in `model`'s list.

  Args:
    model: a model from `build_two_stream`.

  Returns:
    Indices into `model.trainable_variables` of every variable that is not
    W_hat's, in order; they line up with the plain model's own list.
  """
  supplementary = model.get_layer(SUPPLEMENTARY_LAYER)
  excluded = {v.ref() for v in supplementary.trainable_variables}
  return [i for i, v in enumerate(model.trainable_variables)
          if v.ref() not in excluded]


@dataclasses.dataclass(frozen=True)
class TwoStreamSpec(spec_lib.ModelSpec):
  """A `ModelSpec` whose models carry the supplementary classifier W_hat.

  Attributes:
    base: the plain spec it extends (ours or a user's `KerasModelSpec`),
      which builds the plain model; never rebuilt from its name.
  """
  base: spec_lib.ModelSpec = None

  @classmethod
  def of(cls, plain: spec_lib.ModelSpec) -> 'TwoStreamSpec':
    return cls(plain.name, plain.input_shape, plain.num_classes, plain.seed,
               base=plain)

  def plain(self) -> spec_lib.ModelSpec:
    """The spec of the inference model (W only, eq. 16)."""
    return self.base

  def build_keras(self) -> tf.keras.Model:
    return build_two_stream(self.base.build_keras())
