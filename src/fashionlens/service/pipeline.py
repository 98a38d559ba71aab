"""In-process inference behind the service: uploaded bytes in, tags / category path / similar catalogue items out.

The tagger, the hierarchy classifier and the embedder are all heads on pooled backbone features, so a request is
answered in three steps: :meth:`Pipeline.prepare` decodes the upload and makes one input tensor per distinct backbone
(name, weights, transform); :meth:`Pipeline.run` does one forward pass per backbone for a whole batch of requests and
feeds every head that uses it (tagger and hierarchy on the same EfficientNet share one pass); the heads' outputs
become JSON-ready answers. Uploads never touch the disk: the models' own ``predict(manifest)`` would need a file per
image and would fill the shared feature cache with one-off uploads.

Every component is optional; asking for one that was not loaded raises :class:`ComponentMissingError`.

Catalogue searches run FAISS on one OpenMP thread per calling thread: the service gets its parallelism from
concurrent requests, and FAISS's default of one thread per core per search makes one-query searches slower on a busy
machine (see :class:`~fashionlens.index.CatalogueIndex`). ``faiss.omp_set_num_threads`` only affects the thread that
calls it, so it is set in each thread that searches, the first time it does.
"""

from __future__ import annotations

import importlib.metadata
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from fashionlens.catalogue import index_embedder
from fashionlens.data.crops import CropSpec
from fashionlens.data.images import DecodeLimits, decode_for_model
from fashionlens.data.transforms import describe, eval_transform
from fashionlens.errors import CatalogueIndexError, ConfigError, DataError, FashionlensError, ModelError
from fashionlens.index import CatalogueIndex, Filters, SearchHit
from fashionlens.index.filters import INTERNAL_FIELDS, check_fields, parse_filters, shown
from fashionlens.index.store import ITEM_ID, ITEMS_FILE
from fashionlens.models.backbones import Backbone, BackboneConfig
from fashionlens.models.localiser import GarmentLocaliser
from fashionlens.runtime import check_runtime
from fashionlens.runtime.compiled import CompiledBackbone, compile_backbone
from fashionlens.tasks.hierarchy import HierarchyClassifier, HierarchyPredictions
from fashionlens.tasks.retrieval import (
    ATTRIBUTE_MODES,
    DEFAULT_VIEWS,
    AttributeSteering,
    Embedder,
    QueryCrop,
    default_localiser,
    fuse_embeddings,
    plan_image_crops,
    steering_for_index,
    view_images,
)
from fashionlens.tasks.tag_evaluation import TaggerEnsemble, load_tagger
from fashionlens.tasks.tagging import Predictions, Tagger

TASKS = ("tags", "hierarchy", "embedding", "attributes")
TOP_ALTERNATIVES = 3

TagModel = Tagger | TaggerEnsemble


def search_tasks(attributes: str) -> tuple[str, ...]:
    """The pipeline tasks of a photo search: the embedding, and the query's attributes unless ``off``.

    Raises:
        DataError: ``attributes`` is neither ``auto`` nor ``off``.
    """
    if attributes not in ATTRIBUTE_MODES:
        raise DataError(f"attributes must be one of {', '.join(ATTRIBUTE_MODES)}, got {attributes!r}")
    return ("embedding", "attributes") if attributes == "auto" else ("embedding",)


class ComponentMissingError(FashionlensError):
    """The request needs a model or index the service was started without."""


class UnknownItemError(CatalogueIndexError):
    """The requested catalogue item is not in the index."""


@dataclass(frozen=True)
class BackboneKey:
    """What makes two components' features interchangeable: backbone name, weights and input transform."""

    name: str
    weights_id: str
    transform: str


@dataclass
class Job:
    """One decoded upload, ready for a batch: its input tensor per backbone and what it asks for."""

    tasks: frozenset[str]
    inputs: dict[BackboneKey, torch.Tensor]
    k: int = 10
    filters: Filters | None = None
    size: tuple[int, int] = (0, 0)
    crop: QueryCrop | None = None
    views: list[torch.Tensor] = field(default_factory=list)
    """Embedding inputs: one per searched view of the photo (see :mod:`fashionlens.tasks.retrieval.localised`)."""


@dataclass
class _Features:
    """Pooled features of a batch's requests, per backbone (rows in request order of those that needed it)."""

    rows: dict[BackboneKey, list[int]] = field(default_factory=dict)
    values: dict[BackboneKey, np.ndarray] = field(default_factory=dict)

    def of(self, key: BackboneKey, requests: Sequence[int]) -> np.ndarray:
        position = {row: i for i, row in enumerate(self.rows[key])}
        return self.values[key][[position[r] for r in requests]]


def _as_backbone(module: nn.Module, owner: str) -> Backbone:
    if not isinstance(module, Backbone):
        raise ModelError(f"the {owner} has no fashionlens backbone (got {type(module).__name__})")
    return module


class Pipeline:
    """Loaded models (each optional) and the batched image → answer path shared by the service and its benchmark.

    Args:
        tagger: Attribute tagger or tagger ensemble.
        hierarchy: Category-path classifier.
        index: Catalogue index (similar items by id, item images; with ``embedder`` also search by photo).
        embedder: The embedding model the index was built with.
        attribute_tagger: The tagger whose category and colours steer photo search (``None``: ``tagger``); with no
            usable one, photo search runs unsteered and :attr:`steering_note` says why.
        sources: Where each component was loaded from, for :meth:`info`.
        items: ``item_id`` → image file (or ``None``) of every catalogue item; :meth:`load` reads it from the index.
        decode_limits: Pixel cap and accepted formats of uploads (default: :meth:`DecodeLimits.from_env`, read
            once, here, so that a malformed environment stops the service at start-up).
        runtime: Where the backbones run: ``auto`` (onnxruntime on CPU), ``torch`` or ``onnx`` (see
            :func:`~fashionlens.runtime.compiled.compile_backbone`).
        threads: Intra-op threads of each backbone's runtime (``None``: one per core); a service running ``W``
            inference threads passes ``cores // W`` (see :func:`~fashionlens.service.batching.plan_threads`).
        localiser: Finds the garment in photo searches with ``crop=auto`` (default: one is built when photo search
            is available: the process's shared one).
    """

    def __init__(self, tagger: TagModel | None = None, hierarchy: HierarchyClassifier | None = None,
                 index: CatalogueIndex | None = None, embedder: Embedder | None = None,
                 sources: Mapping[str, str] | None = None, items: Mapping[str, str | None] | None = None,
                 decode_limits: DecodeLimits | None = None, runtime: str = "auto", threads: int | None = None,
                 attribute_tagger: TagModel | None = None, localiser: GarmentLocaliser | None = None):
        if embedder is not None and index is not None and embedder.model_id != index.model_id:
            raise CatalogueIndexError(f"catalogue index was built with embedding model {index.model_id!r}, not "
                                      f"{embedder.model_id!r}; pass the embedder that built it")
        self.tagger = tagger
        self.hierarchy = hierarchy
        self.index = index
        self.embedder = embedder if index is not None else None
        self.sources = dict(sources or {})
        self._items = dict(items or {})
        self.decode_limits = decode_limits or DecodeLimits.from_env()
        # the index's own columns, so that a filter is refused here exactly when the index would refuse it
        self._fields = [ITEM_ID, *index.info()["fields"]] if index is not None else []
        self.runtime, self.threads = check_runtime(runtime), threads
        self._backbones: dict[BackboneKey, CompiledBackbone] = {}
        self._transforms: dict[BackboneKey, v2.Compose] = {}
        self._task_keys: dict[str, list[BackboneKey]] = {}
        if tagger is not None:
            self._task_keys["tags"] = [self._register(m.backbone, "tagger") for m in self._members(tagger)]
        if hierarchy is not None:
            self._task_keys["hierarchy"] = [self._register(hierarchy.backbone, "hierarchy classifier")]
        self.localiser: GarmentLocaliser | None = None
        if self.embedder is not None:
            self._task_keys["embedding"] = [self._register(self.embedder.backbone, "embedder")]
            self.localiser = localiser or default_localiser()
        steerer = attribute_tagger or tagger
        self.steering, self.steering_note = self._steering(steerer)
        self._attribute_tagger = steerer if self.steering is not None else None
        if self._attribute_tagger is not None:
            members = self._members(self._attribute_tagger)
            self._task_keys["attributes"] = [self._register(m.backbone, "attribute tagger") for m in members]

    @classmethod
    def load(cls, tagger_dir: str | Path | None = None, hierarchy_dir: str | Path | None = None,
             index_dir: str | Path | None = None, embedder_dir: str | Path | None = None,
             decode_limits: DecodeLimits | None = None, runtime: str = "auto",
             threads: int | None = None) -> Pipeline:
        """Load the given model directories once (any may be ``None``).

        Without ``embedder_dir`` the index is searched by photo with the embedder it records, else only when it was
        built with the untrained baseline embedder (ImageNet features of the backbone named in its model id), which
        needs no files; otherwise photo search answers :class:`ComponentMissingError` while search by item id still
        works. Photo search is steered by the attributes of ``tagger_dir``'s tagger, or else of the tagger the index
        records.

        Raises:
            ModelError: A model directory is missing or broken.
            CatalogueIndexError: The index is missing or broken, or was built by another embedder than the one given.
        """
        sources: dict[str, str] = {}
        tagger = hierarchy = index = embedder = attribute_tagger = None
        items: dict[str, str | None] = {}
        if tagger_dir is not None:
            tagger, sources["tagger"] = load_tagger(tagger_dir), str(tagger_dir)
        if hierarchy_dir is not None:
            hierarchy, sources["hierarchy"] = HierarchyClassifier.load(hierarchy_dir), str(hierarchy_dir)
        if index_dir is not None:
            index, sources["index"] = CatalogueIndex.load(index_dir), str(index_dir)
            items = _read_items(Path(index_dir))
            recorded = index.models
            if embedder_dir is not None or "embedder" in recorded:
                embedder = index_embedder(index, embedder_dir)
                sources["embedder"] = str(embedder_dir or recorded["embedder"])
            else:
                embedder = _baseline_embedder(index.model_id)
                if embedder is not None:
                    sources["embedder"] = "untrained baseline (ImageNet features)"
            if tagger is None and "tagger" in recorded:
                attribute_tagger = load_tagger(recorded["tagger"])
                sources["attribute tagger"] = str(recorded["tagger"])
        elif embedder_dir is not None:
            raise ConfigError(f"--embedder {embedder_dir} was given without --index; photo search needs both")
        return cls(tagger, hierarchy, index, embedder, sources, items, decode_limits, runtime, threads,
                   attribute_tagger)

    def _register(self, module: nn.Module, owner: str) -> BackboneKey:
        backbone = _as_backbone(module, owner)
        transform = eval_transform(backbone.preprocess)
        key = BackboneKey(backbone.name, backbone.weights_id, describe(transform))
        if key not in self._backbones:
            self._backbones[key] = compile_backbone(backbone, self.runtime, threads=self.threads)
            self._transforms[key] = transform
        return key

    # ------------------------------------------------------------------------------------------------ queries
    @property
    def available(self) -> dict[str, bool]:
        """Which answers this pipeline can give."""
        return {"tag": self.tagger is not None or self.hierarchy is not None, "tagger": self.tagger is not None,
                "hierarchy": self.hierarchy is not None, "search": self.embedder is not None,
                "similar": self.index is not None}

    def require(self, what: str) -> None:
        """Raise :class:`ComponentMissingError` with the start-up option to fix it when ``what`` is unavailable."""
        if self.available.get(what, False):
            return
        reasons = {
            "tag": "no tagger or hierarchy model loaded; start the service with --tagger DIR and/or --hierarchy DIR",
            "search": ("no catalogue index loaded; start the service with --index DIR" if self.index is None else
                       f"the catalogue index was built by embedding model {self.index.model_id!r}; start the service "
                       f"with --embedder DIR of that model to search by photo"),
            "similar": "no catalogue index loaded; start the service with --index DIR",
        }
        raise ComponentMissingError(reasons.get(what, f"'{what}' is not available"))

    def parse_filters(self, expressions: Sequence[str]) -> Filters | None:
        """``field=value[,value...]`` expressions (the CLI's syntax) → filters; repeating a field adds values.

        Raises:
            CatalogueIndexError: An expression without ``=`` or value, or a field the catalogue does not have or
                keeps private (see :func:`fashionlens.index.filters.check_fields`).
        """
        filters = parse_filters(expressions)
        check_fields(filters, self._fields)
        return filters or None

    # ------------------------------------------------------------------------------------------------ inference
    def prepare(self, data: bytes, source: str, tasks: Sequence[str], k: int = 10,
                filters: Filters | None = None, crop: str | CropSpec = "auto") -> Job:
        """Decode an upload and make the input tensor of every backbone its ``tasks`` need; a search (``embedding``)
        gets one per view of the ``crop`` box (see :mod:`fashionlens.tasks.retrieval.localised`).

        Raises:
            ImageError: Empty, truncated, non-image, refused-format or oversized upload, named by ``source``.
            ConfigError: A malformed or empty crop spec.
            DataError: A crop box outside the image.
        """
        wanted = frozenset(t for t in tasks if t in self._task_keys)
        decoded = decode_for_model(data, source=source, limits=self.decode_limits)
        image, size = decoded.image, decoded.full_size
        keys = {key for task in wanted - {"embedding"} for key in self._task_keys[task]}
        job = Job(wanted, {key: self._transforms[key](image) for key in keys}, k, filters, size)
        if "embedding" in wanted:
            job.crop = plan_image_crops([image], [size], [source], crop, self.localiser)[0]
            transform = self._transforms[self._task_keys["embedding"][0]]
            job.views = [transform(view) for view in view_images(image, job.crop, DEFAULT_VIEWS)]
        return job

    @torch.inference_mode()
    def run(self, jobs: Sequence[Job]) -> list[dict[str, Any] | FashionlensError]:
        """Answer a batch: one forward pass per backbone, then each head on the rows that asked for it.

        A job whose answer fails (e.g. a filter rejected by the index) gets its error in place of an answer, so
        one bad request never fails the others in its batch.
        """
        features = _Features()
        for key, backbone in self._backbones.items():
            rows = [i for i, job in enumerate(jobs) if key in job.inputs]
            if rows:
                batch = torch.stack([jobs[i].inputs[key] for i in rows])
                features.rows[key], features.values[key] = rows, backbone(batch)
        answers: list[dict[str, Any] | FashionlensError] = [{"image": {"width": j.size[0], "height": j.size[1]}}
                                                            for j in jobs]
        for task, answer_rows in self._task_rows(jobs).items():
            try:
                outputs = (self._embed_views(jobs, answer_rows) if task == "embedding" else
                           self._heads(task, features, answer_rows))
            except FashionlensError as error:
                for row in answer_rows:
                    answers[row] = error
                continue
            for row, output in zip(answer_rows, outputs, strict=True):
                answer = answers[row]
                if isinstance(answer, dict):
                    answer.update(output)
        for row, job in enumerate(jobs):
            answer = answers[row]
            if "embedding" in job.tasks and isinstance(answer, dict):
                try:
                    answer.update(self._search(answer.pop("embedding"), job.k, job.filters,
                                               answer.pop("attribute_predictions", None)))
                    answer["crop"] = job.crop.as_dict() if job.crop is not None else None
                except FashionlensError as error:
                    answers[row] = error
        return answers

    def tag(self, data: bytes, source: str = "<upload>") -> dict[str, Any]:
        """Tags, head classes and category path of one image (the whole in-process path, for one request)."""
        self.require("tag")
        return self._one(self.prepare(data, source, ("tags", "hierarchy")))

    def search(self, data: bytes, source: str = "<upload>", k: int = 10, filters: Filters | None = None,
               attributes: str = "auto", crop: str | CropSpec = "auto") -> dict[str, Any]:
        """The ``k`` catalogue items most similar to one image, steered by its attributes unless ``off``, searched
        with its ``crop`` box (``auto``: the garment; the answer's ``crop`` says which box was used and whether it
        fell back to the whole image)."""
        self.require("search")
        return self._one(self.prepare(data, source, search_tasks(attributes), k, filters, crop))

    def similar(self, item_id: str, k: int = 10, filters: Filters | None = None) -> dict[str, Any]:
        """The ``k`` catalogue items most similar to catalogue item ``item_id`` (never itself).

        Raises:
            UnknownItemError: ``item_id`` is not in the index.
        """
        self.require("similar")
        assert self.index is not None
        self._check_item(item_id)
        _one_faiss_thread()
        return {"item_id": item_id, "results": [_hit(h) for h in self.index.search_by_id(item_id, k, filters)]}

    def item_image(self, item_id: str) -> Path:
        """Image file of catalogue item ``item_id``.

        Raises:
            UnknownItemError: Unknown item, or its image is not on this machine.
        """
        self.require("similar")
        self._check_item(item_id)
        recorded = self._items[item_id]
        path = Path(recorded) if recorded else None
        if path is None or not path.is_file():
            raise UnknownItemError(f"the image of item {shown(item_id)} is not available on this server")
        return path

    def info(self) -> dict[str, Any]:
        """Models, versions, index size: what ``GET /v1/info`` reports."""
        return {
            "versions": {name: _version(name) for name in ("fashionlens", "torch", "timm", "onnxruntime", "faiss-cpu",
                                                           "fastapi")},
            "runtime": {"asked": self.runtime, "threads": self.threads,
                        "backbones": {f"{key.name} ({key.weights_id})": compiled.runtime
                                      for key, compiled in self._backbones.items()}},
            "available": self.available,
            "tagger": self._tagger_info(),
            "hierarchy": None if self.hierarchy is None else {
                "source": self.sources.get("hierarchy"), "levels": list(self.hierarchy.taxonomy.levels),
                "classes": self.hierarchy.taxonomy.sizes, "variant": self.hierarchy.config.variant,
                "backbone": self._task_backbones("hierarchy"), "metrics": self.hierarchy.metrics},
            "index": None if self.index is None else self._index_info(),
            "attributes": None if self.embedder is None else {
                "steering": self.steering is not None, "note": self.steering_note,
                "source": self.sources.get("attribute tagger", self.sources.get("tagger")),
                "mapping": None if self.steering is None else self.steering.mapping.source},
            "embedder": None if self.embedder is None else {
                "source": self.sources.get("embedder"), "model_id": self.embedder.model_id, "dim": self.embedder.dim,
                "backbone": self._task_backbones("embedding")},
        }

    def warm_up(self) -> None:
        """One forward pass per backbone, so the first real request does not pay for lazy initialisation (a fresh
        ONNX graph still waits for a real upload for its check against PyTorch)."""
        blank = Image.new("RGB", (64, 64), (255, 255, 255))
        for key, backbone in self._backbones.items():
            backbone.warm_up(self._transforms[key](blank)[None])

    # ------------------------------------------------------------------------------------------------ internals
    def _one(self, job: Job) -> dict[str, Any]:
        answer = self.run([job])[0]
        if isinstance(answer, FashionlensError):
            raise answer
        return answer

    def _check_item(self, item_id: str) -> None:
        if item_id not in self._items:
            raise UnknownItemError(f"item_id {shown(item_id)} is not in the catalogue index")

    def _index_info(self) -> dict[str, Any]:
        assert self.index is not None
        info = {"source": self.sources.get("index"), **self.index.info()}
        info["fields"] = {name: count for name, count in info["fields"].items() if name not in INTERNAL_FIELDS}
        return info

    def _task_rows(self, jobs: Sequence[Job]) -> dict[str, list[int]]:
        rows = {task: [i for i, job in enumerate(jobs) if task in job.tasks] for task in TASKS}
        return {task: chosen for task, chosen in rows.items() if chosen}

    def _heads(self, task: str, features: _Features, rows: list[int]) -> list[dict[str, Any]]:
        keys = self._task_keys[task]
        if task == "tags":
            assert self.tagger is not None
            return _tag_answers(self.tagger, _tag_predictions(self.tagger, [features.of(k, rows) for k in keys]))
        if task == "hierarchy":
            assert self.hierarchy is not None
            return _hierarchy_answers(self.hierarchy.predict_features(features.of(keys[0], rows)))
        if task == "attributes":
            assert self._attribute_tagger is not None
            predictions = _tag_predictions(self._attribute_tagger, [features.of(k, rows) for k in keys])
            return [{"attribute_predictions": predictions.subset(np.array([i]))} for i in range(len(rows))]
        raise ConfigError(f"no head answers task '{task}'")

    def _embed_views(self, jobs: Sequence[Job], rows: list[int]) -> list[dict[str, Any]]:
        """One forward pass over every view of the searching jobs; each job's views fused into its query vector."""
        assert self.embedder is not None
        backbone = self._backbones[self._task_keys["embedding"][0]]
        vectors = self.embedder.embed_features(backbone(torch.stack([view for r in rows for view in jobs[r].views])))
        fused = fuse_embeddings(vectors.reshape(len(rows), len(DEFAULT_VIEWS), -1), self.embedder.metric == "ip")
        return [{"embedding": vector} for vector in fused]

    def _search(self, vector: np.ndarray, k: int, filters: Filters | None,
                predictions: Predictions | None = None) -> dict[str, Any]:
        assert self.index is not None
        _one_faiss_thread()
        if predictions is None or self.steering is None:
            return {"results": [_hit(h) for h in self.index.search(vector[None], k, filters)[0]]}
        shortlist = max(k, min(self.steering.weights.shortlist, len(self.index)))
        hits = self.steering.steer(self.index.search(vector[None], shortlist, filters), predictions, k)[0]
        steered_by = self.steering.attributes(predictions)[0].describe(self.steering.mapping, self.steering.weights)
        return {"results": [_hit(h) for h in hits], "steered_by": steered_by}

    def _steering(self, tagger: TagModel | None) -> tuple[AttributeSteering | None, str | None]:
        """Attribute steering of photo search, or why there is none (an unfit tagger only turns it off: the
        service's tagger may be meant for tagging alone)."""
        if self.index is None or self.embedder is None:
            return None, None
        try:
            source = self.sources.get("attribute tagger", self.sources.get("tagger", ""))
            return steering_for_index(self.index, tagger, source=f"tagger {source}".strip())
        except (ConfigError, DataError) as error:
            return None, f"attribute steering off: {error}"

    @staticmethod
    def _members(tagger: TagModel) -> list[Tagger]:
        return list(tagger.members) if isinstance(tagger, TaggerEnsemble) else [tagger]

    def _task_backbones(self, task: str) -> list[str]:
        return [f"{key.name} ({key.weights_id}; {self._backbones[key].runtime})"
                for key in self._task_keys.get(task, [])]

    def _tagger_info(self) -> dict[str, Any] | None:
        if self.tagger is None:
            return None
        ensemble = isinstance(self.tagger, TaggerEnsemble)
        return {"source": self.sources.get("tagger"), "kind": "ensemble" if ensemble else "tagger",
                "tags": list(self.tagger.labels.tags), "heads": dict(self.tagger.labels.heads),
                "backbone": self._task_backbones("tags"),
                "metrics": None if isinstance(self.tagger, TaggerEnsemble) else self.tagger.metrics}


def _tag_predictions(tagger: TagModel, member_features: Sequence[np.ndarray]) -> Predictions:
    """The tagger's probabilities from its members' features (an ensemble averages them as its ``predict`` does)."""
    if isinstance(tagger, Tagger):
        return tagger.predict_features(member_features[0])
    outputs = [m.predict_features(f) for m, f in zip(tagger.members, member_features, strict=True)]

    def mean(get: Callable[[Predictions], np.ndarray]) -> np.ndarray:
        return np.sum([w * get(o) for w, o in zip(tagger.weights, outputs, strict=True)], axis=0).astype(np.float32)

    return Predictions(tags=mean(lambda o: o.tags), heads={h: mean(lambda o, h=h: o.heads[h])  # type: ignore[misc]
                                                            for h in tagger.labels.heads})


def _tag_answers(tagger: TagModel, predictions: Predictions) -> list[dict[str, Any]]:
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


def _hierarchy_answers(predictions: HierarchyPredictions) -> list[dict[str, Any]]:
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


_FAISS_THREADS = threading.local()


def _one_faiss_thread() -> None:
    """Make FAISS use one OpenMP thread in the calling thread (the setting is per thread; see the module docstring)."""
    if not getattr(_FAISS_THREADS, "set", False):
        faiss.omp_set_num_threads(1)
        _FAISS_THREADS.set = True


def _hit(hit: SearchHit) -> dict[str, Any]:
    metadata = {k: v for k, v in hit.metadata.items() if k not in INTERNAL_FIELDS}  # server file paths stay private
    return {"item_id": hit.item_id, "score": round(float(hit.score), 4), "rank": hit.rank, "metadata": metadata}


def _read_items(index_dir: Path) -> dict[str, str | None]:
    """``item_id`` → image path (``None`` when the catalogue recorded none) from the index's item table.

    :class:`CatalogueIndex` offers no look-up of one item's metadata, so the service reads the two columns it needs.
    """
    file = index_dir / ITEMS_FILE
    try:
        with_path = "path" in pq.read_schema(file).names
        table = pq.read_table(file, columns=[ITEM_ID, "path"] if with_path else [ITEM_ID])
    except (OSError, ValueError) as error:
        raise CatalogueIndexError(f"cannot read {file}: {error}") from error
    ids = table.column(ITEM_ID).to_pylist()
    paths = table.column("path").to_pylist() if with_path else [None] * len(ids)
    return dict(zip(ids, paths, strict=True))


def _baseline_embedder(model_id: str) -> Embedder | None:
    """The untrained baseline embedder when it is the model that built an index (``model_id``), else ``None``."""
    try:
        candidate = Embedder.untrained(BackboneConfig(name=model_id.split("|", 1)[0]),
                                       normalize=not model_id.endswith("|raw"))
    except FashionlensError:
        return None
    return candidate if candidate.model_id == model_id else None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
