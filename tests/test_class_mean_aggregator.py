"""The per-class masked mean factory (004 eq. 15), tested alone in TFF."""

import collections

import numpy as np
import pytest

from tff_imbalance import compat
from tff_imbalance.learning.aggregators import class_mean

tff = compat.tff

VALUE_TYPE = tff.StructWithPythonType(
    [('values', tff.StructWithPythonType(
        [('g', tff.TensorType(np.float32, [3, 2]))], collections.OrderedDict)),
     ('mask', tff.TensorType(np.float32, [3]))], collections.OrderedDict)


def _value(rows, mask):
  return collections.OrderedDict(
      values=collections.OrderedDict(g=np.array(rows, np.float32)),
      mask=np.array(mask, np.float32))


@pytest.fixture(scope='module')
def process():
  return class_mean.ClassMeanFactory().create(VALUE_TYPE)


def test_type_signature(process):
  next_type = process.next.type_signature
  assert next_type.parameter[0] == tff.FederatedType(VALUE_TYPE, tff.SERVER)
  assert next_type.parameter[1] == tff.FederatedType(VALUE_TYPE, tff.CLIENTS)
  assert next_type.result.result == tff.FederatedType(VALUE_TYPE, tff.SERVER)
  assert next_type.result.measurements.member.holders == tff.TensorType(
      np.float32, [3])


def test_mean_over_holders_and_previous_value_for_absent_classes(process):
  state = process.initialize()
  np.testing.assert_array_equal(state['mask'], [0, 0, 0])
  # Class 0: two holders; class 1: one holder (the other client's 5s must not
  # count); class 2: nobody, although a client sends non-zero rows for it.
  first = process.next(state, [_value([[1, 1], [2, 2], [9, 9]], [1, 1, 0]),
                               _value([[3, 5], [5, 5], [7, 7]], [1, 0, 0])])
  np.testing.assert_allclose(first.result['values']['g'],
                             [[2, 3], [2, 2], [0, 0]])
  np.testing.assert_array_equal(first.result['mask'], [1, 1, 0])
  np.testing.assert_array_equal(first.measurements['holders'], [2, 1, 0])
  # Next round only class 1 has a holder: class 0 keeps its previous mean.
  second = process.next(first.state, [_value([[8, 8], [4, 6], [9, 9]],
                                             [0, 1, 0])])
  np.testing.assert_allclose(second.result['values']['g'],
                             [[2, 3], [4, 6], [0, 0]])
  np.testing.assert_array_equal(second.result['mask'], [1, 1, 0])
  np.testing.assert_allclose(second.state['values']['g'],
                             second.result['values']['g'])


def test_no_holder_at_all_keeps_state(process):
  state = process.initialize()
  output = process.next(state, [_value([[1, 2], [3, 4], [5, 6]], [0, 0, 0])])
  np.testing.assert_array_equal(output.result['values']['g'], np.zeros([3, 2]))
  np.testing.assert_array_equal(output.result['mask'], [0, 0, 0])


def test_field_factory_sums_other_fields():
  report_type = tff.StructWithPythonType(
      [('label_counts', tff.TensorType(np.int64, [3])),
       ('extension', VALUE_TYPE)], collections.OrderedDict)
  process = class_mean.FieldFactory(
      'extension', class_mean.ClassMeanFactory()).create(report_type)
  reports = [collections.OrderedDict(label_counts=np.array([1, 2, 0]),
                                     extension=_value([[2, 2], [0, 0], [0, 0]],
                                                      [1, 0, 0])),
             collections.OrderedDict(label_counts=np.array([3, 0, 0]),
                                     extension=_value([[4, 0], [0, 0], [0, 0]],
                                                      [1, 0, 0]))]
  output = process.next(process.initialize(), reports)
  np.testing.assert_array_equal(output.result['label_counts'], [4, 2, 0])
  np.testing.assert_allclose(output.result['extension']['values']['g'],
                             [[3, 1], [0, 0], [0, 0]])


def test_rejects_values_without_mask():
  with pytest.raises(TypeError, match='mask'):
    class_mean.ClassMeanFactory().create(
        tff.StructWithPythonType([('g', tff.TensorType(np.float32, [3]))],
                                 collections.OrderedDict))
