"""Tagger ensembles (``tasks/tagging/ensemble.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fashionlens.data.records import Manifest
from fashionlens.errors import ModelError
from fashionlens.tasks.tagging import Tagger, TaggerEnsemble, train_tagger

from .conftest import QUIET, quick_config, synthetic


def test_ensemble_averages_member_probabilities(tmp_path: Path) -> None:
    manifest, features = synthetic()
    first = train_tagger(manifest, quick_config(), console=QUIET, show_progress=False, features=features)
    second_config = quick_config()
    second_config.train.seed = 7
    second = train_tagger(manifest, second_config, console=QUIET, show_progress=False, features=features)

    class FeatureTagger:
        """Members that predict from the synthetic features instead of images."""

        def __init__(self, tagger: Tagger):
            self.labels, self.tagger = tagger.labels, tagger

        def predict(self, rows: Manifest, device: str | None = None, show_progress: bool = True,  # type: ignore[no-untyped-def]
                    skip_bad_images: bool = False, runtime: str | None = None):
            index = [int(Path(p).stem) for p in rows.frame["path"]]
            return self.tagger.predict_features(features[index])

    ensemble = TaggerEnsemble([FeatureTagger(first), FeatureTagger(second)], weights=[3, 1])  # type: ignore[list-item]
    test = manifest.split_subset("test")
    combined = ensemble.predict(test)
    rows = np.flatnonzero(manifest.frame["split"] == "test")
    expected = 0.75 * first.predict_features(features[rows]).tags + 0.25 * second.predict_features(features[rows]).tags
    np.testing.assert_allclose(combined.tags, expected, rtol=1e-5)
    ensemble.fit_thresholds(manifest)
    assert ensemble.thresholds.shape == (2,)
    with pytest.raises(ModelError, match="weights"):
        TaggerEnsemble([first, second], weights=[1.0])


def test_ensemble_rejects_members_with_different_labels() -> None:
    manifest, features = synthetic(n=200)
    both = train_tagger(manifest, quick_config(heads=[]), console=QUIET, show_progress=False, features=features)
    only_rare = train_tagger(manifest, quick_config(heads=[], tags=["rare"]), console=QUIET, show_progress=False,
                             features=features)
    with pytest.raises(ModelError, match="different labels"):
        TaggerEnsemble([both, only_rare])


def test_combine_is_the_weighted_mean_and_wants_one_output_per_member() -> None:
    manifest, features = synthetic()
    members = [train_tagger(manifest, quick_config(), console=QUIET, show_progress=False, features=features)] * 2
    ensemble = TaggerEnsemble(members, weights=[1, 3])
    first, second = members[0].predict_features(features[:5]), members[0].predict_features(features[5:10])
    combined = ensemble.combine([first, second])
    np.testing.assert_allclose(combined.tags, 0.25 * first.tags + 0.75 * second.tags, rtol=1e-5)
    for head in ensemble.labels.heads:
        np.testing.assert_allclose(combined.heads[head], 0.25 * first.heads[head] + 0.75 * second.heads[head],
                                   rtol=1e-5)
    with pytest.raises(ModelError, match="an ensemble of 2 members got 1 members' predictions"):
        ensemble.combine([first])
