"""Label spaces (``tasks/labels.py``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fashionlens.data.records import Manifest
from fashionlens.errors import DataError
from fashionlens.tasks.labels import LabelSpace


def test_label_space_expands_heads_and_keeps_unlabelled_as_nan() -> None:
    frame = pd.DataFrame({"path": ["a", "b", "c", "d"], "tag:x": [1, 0, np.nan, 1],
                          "class:colour": ["Red", "Blue", "", "Red"]})
    manifest = Manifest(frame)
    space = LabelSpace.from_manifest(manifest, expand_heads=["colour"])
    assert space.tags == ["x", "colour=Blue", "colour=Red"]
    assert space.heads == {}
    targets = space.tag_targets(manifest)
    np.testing.assert_array_equal(targets[:, 0], [1, 0, np.nan, 1])
    np.testing.assert_array_equal(targets[:, 2], [1, 0, np.nan, 1])
    with pytest.raises(DataError, match="nope"):
        LabelSpace.from_manifest(manifest, tags=["nope"])
