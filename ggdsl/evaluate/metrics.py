"""Clustering metrics and raw-pixel baselines.

Two ways to score clusters against class labels:

- :func:`hungarian_accuracy` maps clusters to labels one-to-one (the best such mapping,
  found with the Hungarian algorithm); with more clusters than labels the unmatched
  clusters count as wrong. This is the stricter number.
- :func:`majority_accuracy` is the protocol of the Graphical-GAN paper: each cluster
  predicts its most frequent label, so several clusters may predict the same label.
  It is never below the Hungarian number.

Both take integer arrays of any values (the labels and cluster ids need not be ``0..K-1``).

>>> hungarian_accuracy([0, 0, 1, 1], [1, 1, 0, 0])
1.0
>>> majority_accuracy([0, 0, 1, 1], [5, 5, 5, 7])
0.75

Only numpy, scipy and scikit-learn are used here (scikit-learn only by the baselines).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from ggdsl.errors import EvalError


def _as_pair(labels: Any, clusters: Any) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).reshape(-1)
    clusters = np.asarray(clusters).reshape(-1)
    if labels.shape != clusters.shape:
        raise EvalError(
            f"labels and clusters must have the same length, got {labels.size} labels and {clusters.size} cluster ids"
        )
    if labels.size == 0:
        raise EvalError("cannot score an empty set of points: labels and clusters are empty")
    return labels, clusters


def contingency(labels: Any, clusters: Any) -> np.ndarray:
    """Counts of points per (cluster, label) pair.

    Args:
        labels: Class labels, shape ``(N,)``, any integer (or hashable numpy) values.
        clusters: Cluster ids, shape ``(N,)``.

    Returns:
        An int64 array of shape ``(n_clusters, n_labels)``, rows and columns in sorted
        order of the distinct cluster ids and labels.

    Example:
        >>> contingency([0, 1, 1], [2, 2, 3]).tolist()
        [[1, 1], [0, 1]]
    """
    labels, clusters = _as_pair(labels, clusters)
    _, label_index = np.unique(labels, return_inverse=True)
    _, cluster_index = np.unique(clusters, return_inverse=True)
    table = np.zeros((cluster_index.max() + 1, label_index.max() + 1), dtype=np.int64)
    np.add.at(table, (cluster_index, label_index), 1)
    return table


def hungarian_accuracy(labels: Any, clusters: Any) -> float:
    """Accuracy under the best one-to-one mapping of clusters to labels.

    Args:
        labels: Class labels, shape ``(N,)``.
        clusters: Cluster ids, shape ``(N,)``.

    Returns:
        The fraction of points whose cluster is mapped to their label, in ``[0, 1]``.
        When there are more clusters than labels, the points of unmatched clusters
        count as wrong; when there are fewer, the unmatched labels are never predicted.

    Raises:
        EvalError: The arrays differ in length or are empty.

    Example:
        >>> hungarian_accuracy([0, 0, 1, 1, 2, 2], [2, 2, 0, 0, 1, 1])
        1.0
        >>> hungarian_accuracy([0, 0, 0, 1], [0, 0, 1, 1])
        0.75
    """
    table = contingency(labels, clusters)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / table.sum())


def majority_accuracy(labels: Any, clusters: Any) -> float:
    """Accuracy when each cluster predicts its most frequent label (the paper's protocol).

    Args:
        labels: Class labels, shape ``(N,)``.
        clusters: Cluster ids, shape ``(N,)``.

    Returns:
        The fraction of points whose label is their cluster's majority label, in ``[0, 1]``.
        Always at least :func:`hungarian_accuracy` of the same arrays.

    Raises:
        EvalError: The arrays differ in length or are empty.

    Example:
        >>> majority_accuracy([0, 0, 1, 1], [0, 0, 0, 0])
        0.5
    """
    table = contingency(labels, clusters)
    return float(table.max(axis=1).sum() / table.sum())


def cluster_usage(clusters: Any, k: int) -> dict[str, Any]:
    """How many of ``k`` mixture components are used, and how evenly.

    Args:
        clusters: Component ids in ``0..k-1``, shape ``(N,)``.
        k: The number of components the model has.

    Returns:
        A dict with ``used`` (components with at least one point), ``k``, ``entropy``
        (entropy of the usage histogram divided by ``log k``: 1.0 for uniform use, 0.0 when
        one component takes every point; 1.0 when ``k == 1``) and ``counts`` (points per
        component, a list of ``k`` ints).

    Raises:
        EvalError: ``k < 1``, no points, or an id outside ``0..k-1``.

    Example:
        >>> cluster_usage([0, 0, 1, 1], 4)["used"]
        2
        >>> cluster_usage([0, 0, 1, 1], 4)["entropy"]
        0.5
    """
    if k < 1:
        raise EvalError(f"cluster_usage needs k >= 1 components, got k={k}")
    clusters = np.asarray(clusters).reshape(-1)
    if clusters.size == 0:
        raise EvalError("cannot measure cluster usage of an empty set of points")
    if not np.issubdtype(clusters.dtype, np.integer):
        raise EvalError(f"cluster ids must be integers, got dtype {clusters.dtype}")
    if clusters.min() < 0 or clusters.max() >= k:
        raise EvalError(
            f"cluster ids must lie in 0..{k - 1} for k={k}, got ids from {clusters.min()} to {clusters.max()}"
        )
    counts = np.bincount(clusters, minlength=k)
    p = counts[counts > 0] / clusters.size
    entropy = float(-(p * np.log(p)).sum() / np.log(k)) if k > 1 else 1.0
    return {
        "used": int((counts > 0).sum()),
        "k": int(k),
        "entropy": min(max(entropy, 0.0), 1.0),
        "counts": [int(c) for c in counts],
    }


def _flat_pixels(x: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    if x.ndim < 2 or x.shape[0] != labels.size:
        raise EvalError(f"expected x of shape (N, ...) with N = number of labels ({labels.size}), got shape {x.shape}")
    return x.reshape(x.shape[0], -1), labels


def _scores(labels: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    return {
        "hungarian": hungarian_accuracy(labels, clusters),
        "majority": majority_accuracy(labels, clusters),
    }


def kmeans_accuracy(x: Any, labels: Any, k: int, seed: int = 0) -> dict[str, float]:
    """Clustering accuracy of k-means on raw pixels, a baseline for the model's clusters.

    Args:
        x: Data, shape ``(N, ...)``; flattened to ``(N, D)``.
        labels: Class labels, shape ``(N,)``.
        k: Number of clusters.
        seed: Random seed of the k-means initialisation.

    Returns:
        ``{"hungarian": float, "majority": float}``.

    Raises:
        EvalError: ``x`` and ``labels`` disagree in length.

    Example:
        >>> x = np.array([[0.0], [0.1], [5.0], [5.1]])
        >>> kmeans_accuracy(x, [0, 0, 1, 1], k=2)["hungarian"]
        1.0
    """
    from sklearn.cluster import KMeans

    flat, labels = _flat_pixels(x, labels)
    clusters = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(flat)
    return _scores(labels, clusters)


def pca_gmm_accuracy(x: Any, labels: Any, k: int, n_components: int = 50, seed: int = 0) -> dict[str, float]:
    """Clustering accuracy of a Gaussian mixture on PCA-reduced raw pixels (a baseline).

    Args:
        x: Data, shape ``(N, ...)``; flattened to ``(N, D)``.
        labels: Class labels, shape ``(N,)``.
        k: Number of mixture components.
        n_components: PCA dimensions kept (capped at ``min(N, D)``).
        seed: Random seed of PCA and of the mixture's initialisation.

    Returns:
        ``{"hungarian": float, "majority": float}``.

    Raises:
        EvalError: ``x`` and ``labels`` disagree in length.

    Example:
        >>> x = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
        >>> pca_gmm_accuracy(x, [0, 0, 1, 1], k=2, n_components=1)["majority"]
        1.0
    """
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    flat, labels = _flat_pixels(x, labels)
    dims = max(1, min(n_components, *flat.shape))
    reduced = PCA(n_components=dims, random_state=seed).fit_transform(flat)
    mixture = GaussianMixture(n_components=k, covariance_type="full", random_state=seed)
    clusters = mixture.fit_predict(reduced)
    return _scores(labels, clusters)


def component_purity(read: Any, recovered: Any) -> dict[str, Any]:
    """How cleanly each mixture component of p draws one class, and whether q inverts p.

    Args:
        read: ``(K, N)`` class ids that a classifier reads from ``N`` samples drawn with
            the component fixed to each of the ``K`` values.
        recovered: ``(K, N)`` the component q(k | x) assigns to each of those samples.

    Returns:
        ``component_purity``: the mean over components of the share of the component's
        most frequent class (1.0: every component draws one class only);
        ``component_classes``: that class per component; ``component_classes_covered``:
        how many distinct classes those are; ``component_recovery``: the share of the
        samples q assigns back to the component that drew them. With high purity and
        recovery but a low clustering accuracy, q does not carry over from p's samples
        to real data; with low purity or coverage, p's components do not split the
        data by class in the first place.

    Example:
        >>> out = component_purity([[3, 3, 3, 1], [2, 2, 2, 2]], [[0, 0, 1, 0], [1, 1, 1, 1]])
        >>> out["component_purity"], out["component_classes"], out["component_recovery"]
        (0.875, [3, 2], 0.875)
    """
    read = np.asarray(read)
    recovered = np.asarray(recovered)
    if read.ndim != 2 or read.shape != recovered.shape or read.size == 0:
        raise EvalError(
            "component_purity needs two (components, samples) arrays of one shape, "
            f"got {read.shape} and {recovered.shape}"
        )
    majority, shares = [], []
    for row in read:
        values, counts = np.unique(row, return_counts=True)
        majority.append(values[np.argmax(counts)].item())
        shares.append(counts.max() / row.size)
    components = np.arange(read.shape[0])[:, None]
    return {
        "component_purity": float(np.mean(shares)),
        "component_classes": majority,
        "component_classes_covered": len(set(majority)),
        "component_recovery": float(np.mean(recovered == components)),
    }
