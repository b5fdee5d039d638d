"""Per-class masked mean over clients, keeping absent classes' last value.

RedGrape's global gradient prototypes (004 eq. 15) and CReFF's aggregated
real feature gradients (Shang et al. 2022, sec 4.2) are averaged per class,
uniformly over the round's clients that hold the class:

  g[c] = (1 / |C_c|) sum_{k in C_c} g_k[c]   if C_c (holders of c) is not empty,
  g[c] = g_prev[c]                           otherwise,

so a class nobody held this round keeps its previous global value, and a class
nobody has ever held stays zero with mask 0.

Each client sends `OrderedDict(values=<tensors with leading dimension C>,
mask=float32 [C])` (`mask[c]` = 1.0 where the client holds class c;
`learning.classifier_gradients` builds this structure). The process's state is
the current global structure (the same layout; `mask` says which classes have
ever had a holder), its result is the new global structure and its
measurements the number of holders per class this round.

`FieldFactory` lets the shared local loop's report (its summed label counts
plus an algorithm's `extension` field) use this factory for one field only.
"""

import collections
from typing import Any

import numpy as np
import tensorflow as tf

from tff_imbalance import compat

tff = compat.tff

VALUES = 'values'
MASK = 'mask'


def _zeros_of_type(type_spec) -> Any:
  """Zero tensors (OrderedDicts for structures) of a TFF type."""
  if isinstance(type_spec, tff.TensorType):
    return tf.zeros(type_spec.shape, type_spec.dtype)
  return collections.OrderedDict(
      (name, _zeros_of_type(member))
      for name, member in tff.structure.iter_elements(type_spec))


def _class_mask(mask: tf.Tensor, value: tf.Tensor) -> tf.Tensor:
  """`mask` [C] reshaped to broadcast against `value` [C, ...]."""
  return tf.reshape(mask, [-1] + [1] * (value.shape.rank - 1))


class ClassMeanFactory(tff.aggregators.UnweightedAggregationFactory):
  """Mean per class over the clients holding it; absent classes keep state.

  The value type must be a structure `<values=<...>, mask=float32[C]>` where
  every tensor in `values` has leading dimension C (see module docstring).
  """

  def create(self, value_type) -> tff.templates.AggregationProcess:
    names = tff.structure.name_list(value_type)
    if (not isinstance(value_type, tff.StructType) or
        sorted(names) != sorted([VALUES, MASK])):
      raise TypeError('ClassMeanFactory needs values of type <values=..., '
                      f'mask=float32[C]>, got {value_type}.')
    mask_type = value_type[MASK]
    if mask_type.dtype != np.float32 or len(mask_type.shape) != 1:
      raise TypeError(f'mask must be float32 [C], got {mask_type}.')

    @compat.tf_computation
    def initial_state():
      return _zeros_of_type(value_type)

    @compat.tf_computation(value_type)
    def masked(value):
      # A client's values for classes it does not hold must not count.
      mask = value[MASK]
      return collections.OrderedDict(
          values=tf.nest.map_structure(lambda v: v * _class_mask(mask, v),
                                       value[VALUES]),
          mask=mask)

    summed_type = masked.type_signature.result

    @compat.tf_computation(initial_state.type_signature.result, summed_type)
    def merge(state, sums):
      holders = sums[MASK]
      held = holders > 0

      def class_mean(previous, total):
        mean = tf.math.divide_no_nan(total, _class_mask(holders, total))
        return tf.where(_class_mask(held, total), mean, previous)

      new = collections.OrderedDict(
          values=tf.nest.map_structure(class_mean, state[VALUES],
                                       sums[VALUES]),
          mask=tf.maximum(state[MASK], tf.cast(held, tf.float32)))
      return new, holders

    @compat.federated_computation
    def init_fn():
      return tff.federated_eval(initial_state, tff.SERVER)

    @compat.federated_computation(init_fn.type_signature.result,
                                  tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      sums = tff.federated_sum(tff.federated_map(masked, value))
      new_state, holders = tff.federated_map(merge, (state, sums))
      return tff.templates.MeasuredProcessOutput(
          state=new_state, result=new_state,
          measurements=tff.federated_zip(
              collections.OrderedDict(holders=holders)))

    return tff.templates.AggregationProcess(init_fn, next_fn)


class FieldFactory(tff.aggregators.UnweightedAggregationFactory):
  """Aggregates one named field of a structure with its own factory.

  Every other field is summed (`tff.aggregators.SumFactory`), which is what the
  shared local loop does with its report (label counts and validation losses);
  the named field, e.g. the loop's `extension` report, gets `inner`.
  """

  def __init__(self, field: str,
               inner: tff.aggregators.UnweightedAggregationFactory):
    self._field = field
    self._inner = inner

  def create(self, value_type) -> tff.templates.AggregationProcess:
    names = tff.structure.name_list(value_type)
    if self._field not in names:
      raise TypeError(f'No field {self._field!r} in {value_type}.')
    inner = self._inner.create(value_type[self._field])
    rest_names = [n for n in names if n != self._field]
    rest_type = tff.StructWithPythonType(
        [(n, value_type[n]) for n in rest_names], collections.OrderedDict)
    rest = tff.aggregators.SumFactory().create(rest_type)

    @compat.federated_computation
    def init_fn():
      return tff.federated_zip(
          collections.OrderedDict(inner=inner.initialize(),
                                  rest=rest.initialize()))

    @compat.federated_computation(init_fn.type_signature.result,
                                  tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      inner_output = inner.next(state.inner, value[self._field])
      rest_value = tff.federated_zip(
          collections.OrderedDict((n, value[n]) for n in rest_names))
      rest_output = rest.next(state.rest, rest_value)
      result = collections.OrderedDict(
          (n, inner_output.result if n == self._field else
           rest_output.result[n]) for n in names)
      return tff.templates.MeasuredProcessOutput(
          state=tff.federated_zip(
              collections.OrderedDict(inner=inner_output.state,
                                      rest=rest_output.state)),
          result=tff.federated_zip(result),
          measurements=inner_output.measurements)

    return tff.templates.AggregationProcess(init_fn, next_fn)
