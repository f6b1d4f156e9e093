"""The tfds source against tensorflow-datasets' mock data (never a real download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ggdsl.data import Batches, load_dataset

tfds = pytest.importorskip("tensorflow_datasets")


def test_tfds_mock_mnist(tmp_path: Path) -> None:
    with tfds.testing.mock_data(num_examples=12, data_dir=str(tmp_path)):
        data = load_dataset("tfds", {"name": "mnist", "data_dir": str(tmp_path), "range": [-1, 1]}, "train")
    assert data.name == "tfds:mnist"
    assert data.feature_shapes == {"image": (28, 28, 1), "label": ()}
    assert data.num_examples == 12
    image = data.features["image"]
    assert image.dtype == np.float32 and image.min() >= -1.0 and image.max() <= 1.0
    assert data.features["label"].dtype == np.int64
    batch = next(Batches(data, {"x": "image"}, 4, seed=0))
    assert batch["x"].shape == (4, 28, 28, 1)
