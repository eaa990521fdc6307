import pytest
from sklearn.metrics import roc_auc_score

from robustbench_dice.metrics import edge_auc, node_auc


def test_edge_auc_is_sklearns_over_honest_receivers():
    rows = [[0, 1, 0.1], [0, 2, 0.9], [3, 1, 0.2], [3, 2, 0.4], [3, 4, 0.5], [0, 0, 99.0]]
    auc = edge_auc(rows, byzantine={2})
    assert auc.value == pytest.approx(roc_auc_score([0, 1, 0, 1, 0], [0.1, 0.9, 0.2, 0.4, 0.5]))


def test_node_auc_averages_over_observers():
    rows = [[0, 1, 0.1], [0, 2, 0.9], [3, 1, 0.8], [3, 2, 0.7], [3, 4, 0.5]]
    auc = node_auc(rows, byzantine={2})
    assert auc.value == pytest.approx(roc_auc_score([0, 1, 0], [0.45, 0.8, 0.5]))


def test_undefined_auc_has_a_reason_not_half():
    assert edge_auc([], {1}).value is None and "emits none" in edge_auc([], {1}).reason
    only_honest = edge_auc([[0, 1, 0.3], [0, 2, 0.1]], byzantine={5})
    assert only_honest.value is None and "no Byzantine edges" in only_honest.reason
    only_byz = edge_auc([[0, 1, 0.3]], byzantine={1})
    assert only_byz.value is None and "no honest edges" in only_byz.reason
    nan = edge_auc([[0, 1, float("nan")], [0, 2, 0.1]], byzantine={1})
    assert nan.value is None and "non-finite" in nan.reason
