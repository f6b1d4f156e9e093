"""Clustering metrics: exact values on hand-made arrays, and properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ggdsl.errors import EvalError
from ggdsl.evaluate.metrics import (
    cluster_usage,
    component_purity,
    contingency,
    hungarian_accuracy,
    kmeans_accuracy,
    majority_accuracy,
    pca_gmm_accuracy,
)


def test_permuted_labels_score_one():
    labels = np.array([0, 0, 1, 1, 2, 2, 3])
    clusters = np.array([7, 7, 3, 3, 9, 9, 1])
    assert hungarian_accuracy(labels, clusters) == 1.0
    assert majority_accuracy(labels, clusters) == 1.0


def test_known_confusion():
    # cluster 0: labels 0,0,0,1   cluster 1: labels 1,1,0,0
    labels = [0, 0, 0, 1, 1, 1, 0, 0]
    clusters = [0, 0, 0, 0, 1, 1, 1, 1]
    assert contingency(labels, clusters).tolist() == [[3, 1], [2, 2]]
    assert hungarian_accuracy(labels, clusters) == 5 / 8
    assert majority_accuracy(labels, clusters) == 5 / 8


def test_two_clusters_same_majority_label():
    labels = [0, 0, 0, 0, 1, 1]
    clusters = [0, 0, 1, 1, 1, 1]
    # majority: cluster 0 -> 0 (2 right), cluster 1 -> 0 or 1 (2 right)
    assert majority_accuracy(labels, clusters) == 4 / 6
    assert hungarian_accuracy(labels, clusters) == 4 / 6
    labels = [0, 0, 0, 0, 0, 1]
    clusters = [0, 0, 1, 1, 1, 1]
    # majority: both clusters predict 0 -> 5 right; one-to-one: 2 + 1 or 3 + 0 right
    assert majority_accuracy(labels, clusters) == 5 / 6
    assert hungarian_accuracy(labels, clusters) == 3 / 6


def test_more_clusters_than_labels():
    labels = [0, 0, 1, 1, 1, 1]
    clusters = [0, 0, 1, 1, 2, 2]
    assert hungarian_accuracy(labels, clusters) == 4 / 6
    assert majority_accuracy(labels, clusters) == 1.0


def test_fewer_clusters_than_labels():
    labels = [0, 1, 2, 2]
    clusters = [0, 0, 0, 0]
    assert hungarian_accuracy(labels, clusters) == 0.5
    assert majority_accuracy(labels, clusters) == 0.5


def test_bad_input():
    with pytest.raises(EvalError, match="same length"):
        hungarian_accuracy([0, 1], [0])
    with pytest.raises(EvalError, match="empty"):
        majority_accuracy([], [])


pairs = st.integers(1, 60).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 5), min_size=n, max_size=n),
        st.lists(st.integers(0, 8), min_size=n, max_size=n),
        st.permutations(list(range(9))),
    )
)


@settings(max_examples=150, deadline=None)
@given(pairs)
def test_properties(pair):
    labels, clusters, perm = pair
    hung = hungarian_accuracy(labels, clusters)
    major = majority_accuracy(labels, clusters)
    assert 0.0 <= hung <= major + 1e-12 <= 1.0 + 1e-12
    relabelled = np.asarray(perm)[np.asarray(clusters)]
    assert hungarian_accuracy(labels, relabelled) == hung
    assert majority_accuracy(labels, relabelled) == major
    # Swapping the roles is symmetric for the one-to-one mapping.
    assert hungarian_accuracy(clusters, labels) == pytest.approx(hung)


def test_cluster_usage():
    usage = cluster_usage([0, 0, 1, 1], 4)
    assert usage == {"used": 2, "k": 4, "entropy": 0.5, "counts": [2, 2, 0, 0]}
    assert cluster_usage([3, 3, 3], 4)["entropy"] == 0.0
    assert cluster_usage([0, 1, 2], 3)["entropy"] == pytest.approx(1.0)
    assert cluster_usage([0, 0], 1) == {"used": 1, "k": 1, "entropy": 1.0, "counts": [2]}
    with pytest.raises(EvalError, match="0..3"):
        cluster_usage([0, 4], 4)


def test_baselines_on_separated_blobs():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 4, 4, 1)) * 10
    labels = np.repeat(np.arange(3), 30)
    x = centres[labels] + rng.normal(size=(90, 4, 4, 1)) * 0.1
    assert kmeans_accuracy(x, labels, k=3, seed=0) == {"hungarian": 1.0, "majority": 1.0}
    scores = pca_gmm_accuracy(x, labels, k=3, n_components=5, seed=0)
    assert scores == {"hungarian": 1.0, "majority": 1.0}
    with pytest.raises(EvalError, match="shape"):
        kmeans_accuracy(x[:10], labels, k=3)


def test_component_purity_exact():
    # component 0 draws 3,3,3,1 and q sends one of them to component 1; component 1 draws
    # only 2s, all recovered; component 2 draws 2s too, so two classes are covered
    read = [[3, 3, 3, 1], [2, 2, 2, 2], [2, 2, 0, 0]]
    recovered = [[0, 0, 1, 0], [1, 1, 1, 1], [2, 2, 2, 0]]
    out = component_purity(read, recovered)
    assert out == {
        "component_purity": pytest.approx((0.75 + 1.0 + 0.5) / 3),
        "component_classes": [3, 2, 0],
        "component_classes_covered": 3,
        "component_recovery": pytest.approx(10 / 12),
    }
    with pytest.raises(EvalError, match="one shape"):
        component_purity([[1, 2]], [[1, 2, 3]])
    with pytest.raises(EvalError, match="one shape"):
        component_purity([1, 2], [1, 2])


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 6).flatmap(
        lambda k: st.tuples(
            st.lists(st.lists(st.integers(0, 9), min_size=5, max_size=5), min_size=k, max_size=k),
            st.lists(st.lists(st.integers(0, k - 1), min_size=5, max_size=5), min_size=k, max_size=k),
        )
    )
)
def test_component_purity_properties(pair):
    read, recovered = (np.array(a) for a in pair)
    out = component_purity(read, recovered)
    k = read.shape[0]
    assert 1 / 5 <= out["component_purity"] <= 1.0
    assert 1 <= out["component_classes_covered"] <= k
    assert 0.0 <= out["component_recovery"] <= 1.0
    # a relabelling of the classes changes nothing but the names of the main classes
    perm = np.random.default_rng(0).permutation(10)
    renamed = component_purity(perm[read], recovered)
    assert renamed["component_purity"] == out["component_purity"]
    assert renamed["component_recovery"] == out["component_recovery"]
    # every sample drawn as class c_k and recovered: purity and recovery are 1
    ideal = component_purity(np.repeat(np.arange(k)[:, None], 5, 1), np.repeat(np.arange(k)[:, None], 5, 1))
    assert (ideal["component_purity"], ideal["component_recovery"], ideal["component_classes_covered"]) == (1.0, 1.0, k)
