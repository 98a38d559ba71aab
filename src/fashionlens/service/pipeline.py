"""In-process inference behind the service: uploaded bytes in, tags / category path / similar catalogue items out.

The tagger, the hierarchy classifier and the embedder are all heads on pooled backbone features, so a request is
answered in three steps: :meth:`Pipeline.prepare` decodes the upload and makes one input tensor per distinct backbone
(name, weights, transform); :meth:`Pipeline.run` does one forward pass per backbone for a whole batch of requests and
feeds every head that uses it (tagger and hierarchy on the same EfficientNet share one pass); the heads' outputs
become JSON-ready answers. Uploads never touch the disk: the models' own ``predict(manifest)`` would need a file per
image and would fill the shared feature cache with one-off uploads.

Every component is optional; asking for one that was not loaded raises :class:`ComponentMissingError`. Catalogue
searches run on one thread per calling thread (:func:`~fashionlens.catalogue.search_on_one_thread`): the service
gets its parallelism from concurrent requests. A request is a :class:`~fashionlens.service.jobs.Job`;
the answers' JSON shapes are :mod:`fashionlens.service.answers`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from fashionlens.catalogue import baseline_embedder, check_embedder, index_embedder, search_on_one_thread
from fashionlens.data.crops import CropSpec
from fashionlens.data.images import DecodeLimits, decode_for_model
from fashionlens.data.transforms import describe, eval_transform
from fashionlens.errors import CatalogueIndexError, ConfigError, DataError, FashionlensError, ModelError
from fashionlens.index import CatalogueIndex, Filters
from fashionlens.index.filters import shown
from fashionlens.models.backbones import Backbone
from fashionlens.models.localiser import GarmentLocaliser
from fashionlens.runtime import check_runtime
from fashionlens.runtime.compiled import CompiledBackbone, compile_backbone
from fashionlens.service.answers import (
    TagModel,
    hierarchy_answers,
    hierarchy_info,
    hit_answer,
    index_info,
    package_versions,
    tag_answers,
    tag_predictions,
    tagger_info,
)
from fashionlens.service.jobs import (
    TASKS,
    BackboneKey,
    BatchFeatures,
    ComponentMissingError,
    Job,
    UnknownItemError,
    search_tasks,
)
from fashionlens.tasks.hierarchy import HierarchyClassifier
from fashionlens.tasks.retrieval import (
    DEFAULT_VIEWS,
    AttributeSteering,
    Embedder,
    default_localiser,
    fuse_embeddings,
    plan_image_crops,
    steering_for_index,
    view_images,
)
from fashionlens.tasks.tagging import Predictions, Tagger, TaggerEnsemble, load_tagger

EMBEDDER_OPTION = "--embedder"
"""The service's start-up option naming the embedder (what an embedder/index mismatch tells the operator to pass)."""


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
                 sources: Mapping[str, str] | None = None, decode_limits: DecodeLimits | None = None,
                 runtime: str = "auto", threads: int | None = None,
                 attribute_tagger: TagModel | None = None, localiser: GarmentLocaliser | None = None):
        if embedder is not None and index is not None:
            check_embedder(index, embedder, EMBEDDER_OPTION)
        self.tagger = tagger
        self.hierarchy = hierarchy
        self.index = index
        self.embedder = embedder if index is not None else None
        self.sources = dict(sources or {})
        self.decode_limits = decode_limits or DecodeLimits.from_env()
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
        if tagger_dir is not None:
            tagger, sources["tagger"] = load_tagger(tagger_dir), str(tagger_dir)
        if hierarchy_dir is not None:
            hierarchy, sources["hierarchy"] = HierarchyClassifier.load(hierarchy_dir), str(hierarchy_dir)
        if index_dir is not None:
            index, sources["index"] = CatalogueIndex.load(index_dir), str(index_dir)
            recorded = index.models
            if embedder_dir is not None or "embedder" in recorded:
                embedder = index_embedder(index, embedder_dir, option=EMBEDDER_OPTION)
                sources["embedder"] = str(embedder_dir or recorded["embedder"])
            else:
                embedder = baseline_embedder(index)
                if embedder is not None:
                    sources["embedder"] = "untrained baseline (ImageNet features)"
            if tagger is None and "tagger" in recorded:
                attribute_tagger = load_tagger(recorded["tagger"])
                sources["attribute tagger"] = str(recorded["tagger"])
        elif embedder_dir is not None:
            raise ConfigError(f"--embedder {embedder_dir} was given without --index; photo search needs both")
        return cls(tagger, hierarchy, index, embedder, sources, decode_limits, runtime, threads, attribute_tagger)

    def _register(self, module: nn.Module, owner: str) -> BackboneKey:
        if not isinstance(module, Backbone):
            raise ModelError(f"the {owner} has no fashionlens backbone (got {type(module).__name__})")
        backbone = module
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
        features = BatchFeatures()
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
        self._item(item_id)
        search_on_one_thread()
        return {"item_id": item_id, "results": [hit_answer(h) for h in self.index.search_by_id(item_id, k, filters)]}

    def item_image(self, item_id: str) -> Path:
        """Image file of catalogue item ``item_id``.

        Raises:
            UnknownItemError: Unknown item, or its image is not on this machine.
        """
        self.require("similar")
        recorded = self._item(item_id).get("path")
        path = Path(recorded) if recorded else None
        if path is None or not path.is_file():
            raise UnknownItemError(f"the image of item {shown(item_id)} is not available on this server")
        return path

    def info(self) -> dict[str, Any]:
        """Models, versions, index size: what ``GET /v1/info`` reports."""
        return {
            "versions": package_versions(),
            "runtime": {"asked": self.runtime, "threads": self.threads,
                        "backbones": {f"{key.name} ({key.weights_id})": compiled.runtime
                                      for key, compiled in self._backbones.items()}},
            "available": self.available,
            "tagger": None if self.tagger is None else tagger_info(self.tagger, self.sources.get("tagger"),
                                                                   self._task_backbones("tags")),
            "hierarchy": None if self.hierarchy is None else hierarchy_info(
                self.hierarchy, self.sources.get("hierarchy"), self._task_backbones("hierarchy")),
            "index": None if self.index is None else index_info(self.index, self.sources.get("index")),
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

    def _item(self, item_id: str) -> dict[str, str | None]:
        assert self.index is not None
        try:
            return self.index.item(item_id)
        except CatalogueIndexError as error:
            raise UnknownItemError(f"item_id {shown(item_id)} is not in the catalogue index") from error

    def _task_rows(self, jobs: Sequence[Job]) -> dict[str, list[int]]:
        rows = {task: [i for i, job in enumerate(jobs) if task in job.tasks] for task in TASKS}
        return {task: chosen for task, chosen in rows.items() if chosen}

    def _heads(self, task: str, features: BatchFeatures, rows: list[int]) -> list[dict[str, Any]]:
        keys = self._task_keys[task]
        if task == "tags":
            assert self.tagger is not None
            return tag_answers(self.tagger, tag_predictions(self.tagger, [features.of(k, rows) for k in keys]))
        if task == "hierarchy":
            assert self.hierarchy is not None
            return hierarchy_answers(self.hierarchy.predict_features(features.of(keys[0], rows)))
        if task == "attributes":
            assert self._attribute_tagger is not None
            predictions = tag_predictions(self._attribute_tagger, [features.of(k, rows) for k in keys])
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
        search_on_one_thread()
        if predictions is None or self.steering is None:
            return {"results": [hit_answer(h) for h in self.index.search(vector[None], k, filters)[0]]}
        shortlist = max(k, min(self.steering.weights.shortlist, len(self.index)))
        seen = self.steering.attributes(predictions)
        hits = self.steering.steer(self.index.search(vector[None], shortlist, filters), seen, k)[0]
        steered_by = seen[0].describe(self.steering.mapping, self.steering.weights)
        return {"results": [hit_answer(h) for h in hits], "steered_by": steered_by}

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
