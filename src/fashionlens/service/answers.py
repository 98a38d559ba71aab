"""The JSON shapes of the service's answers: tags with thresholds and decisions, head classes with their top
alternatives, the category path, catalogue hits (without server file paths) and the parts of ``GET /v1/info``."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from typing import Any

import numpy as np

from fashionlens import __version__
from fashionlens.index import CatalogueIndex, SearchHit
from fashionlens.index.filters import INTERNAL_FIELDS
from fashionlens.tasks.hierarchy import HierarchyClassifier, HierarchyPredictions
from fashionlens.tasks.tagging import Predictions, Tagger, TaggerEnsemble

TOP_ALTERNATIVES = 3
"""Alternatives listed per head and for the category path's leaf."""

TagModel = Tagger | TaggerEnsemble


def tag_predictions(tagger: TagModel, member_features: Sequence[np.ndarray]) -> Predictions:
    """The tagger's probabilities from its members' features (an ensemble averages them as its ``predict`` does)."""
    if isinstance(tagger, Tagger):
        return tagger.predict_features(member_features[0])
    return tagger.combine([m.predict_features(f) for m, f in zip(tagger.members, member_features, strict=True)])


def tag_answers(tagger: TagModel, predictions: Predictions) -> list[dict[str, Any]]:
    decisions = tagger.decide(predictions)  # the F1 set: what a person reading tags wants (F2 favours recall)
    names = tagger.tag_names  # names that say what a positive means, e.g. gender=female
    answers = []
    for row in range(len(predictions.tags)):
        order = np.argsort(-predictions.tags[row], kind="stable")
        scores = [{"label": names[j], "probability": round(float(predictions.tags[row, j]), 4),
                   "threshold": round(float(tagger.thresholds[j]), 4), "decision": bool(decisions[row, j])}
                  for j in order]
        heads = {}
        for head, classes in tagger.labels.heads.items():
            probs = predictions.heads[head][row]
            top = np.argsort(-probs)[:TOP_ALTERNATIVES]
            heads[head] = {"class": classes[int(top[0])], "probability": round(float(probs[top[0]]), 4),
                           "top": [{"class": classes[int(i)], "probability": round(float(probs[i]), 4)}
                                   for i in top]}
        answers.append({"labels": [s["label"] for s in scores if s["decision"]], "tags": scores, "heads": heads})
    return answers


def hierarchy_answers(predictions: HierarchyPredictions) -> list[dict[str, Any]]:
    taxonomy = predictions.taxonomy
    on_path = predictions.path_probabilities()
    leaves = predictions.probabilities[-1]
    answers = []
    for row, path in enumerate(predictions.paths):
        names = taxonomy.path_names(path)
        top = np.argsort(-leaves[row])[:TOP_ALTERNATIVES]
        answers.append({"category": {
            "path": names,
            "levels": [{"level": level, "class": name, "probability": round(float(on_path[row, h]), 4)}
                       for h, (level, name) in enumerate(zip(taxonomy.levels, names, strict=True))],
            "alternatives": [{"class": taxonomy.classes[-1][int(i)], "probability": round(float(leaves[row, i]), 4)}
                             for i in top],
        }})
    return answers


def hit_answer(hit: SearchHit) -> dict[str, Any]:
    metadata = {k: v for k, v in hit.metadata.items() if k not in INTERNAL_FIELDS}  # server file paths stay private
    return {"item_id": hit.item_id, "score": round(float(hit.score), 4), "rank": hit.rank, "metadata": metadata}


def index_info(index: CatalogueIndex, source: str | None) -> dict[str, Any]:
    """The index's summary (:meth:`CatalogueIndex.info`) with where it was loaded from, internal fields left out."""
    info = {"source": source, **index.info()}
    info["fields"] = {name: count for name, count in info["fields"].items() if name not in INTERNAL_FIELDS}
    return info


def tagger_info(tagger: TagModel, source: str | None, backbones: list[str]) -> dict[str, Any]:
    """A tagger's (or ensemble's) source, tags, heads, backbones and validation metrics."""
    ensemble = isinstance(tagger, TaggerEnsemble)
    return {"source": source, "kind": "ensemble" if ensemble else "tagger",
            "tags": list(tagger.labels.tags), "heads": dict(tagger.labels.heads), "backbone": backbones,
            "metrics": None if isinstance(tagger, TaggerEnsemble) else tagger.metrics}


def hierarchy_info(hierarchy: HierarchyClassifier, source: str | None, backbones: list[str]) -> dict[str, Any]:
    """A hierarchy classifier's source, levels, class counts, variant, backbone and validation metrics."""
    return {"source": source, "levels": list(hierarchy.taxonomy.levels), "classes": hierarchy.taxonomy.sizes,
            "variant": hierarchy.config.variant, "backbone": backbones, "metrics": hierarchy.metrics}


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that answer requests (``None``: not installed)."""
    versions: dict[str, str | None] = {"fashionlens": __version__}  # the one version (a checkout has no metadata)
    for package in ("torch", "timm", "onnxruntime", "faiss-cpu", "fastapi"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions
