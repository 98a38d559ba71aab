"""Typed configuration: nested defaults survive partial YAML, unknown keys and bad files are named."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fashionlens.config import SHIPPED_CONFIGS, from_dict, load_config, shipped_configs, to_dict
from fashionlens.engine import TrainConfig
from fashionlens.errors import ConfigError
from fashionlens.tasks.hierarchy import HierarchyConfig
from fashionlens.tasks.retrieval import RetrievalConfig
from fashionlens.tasks.tagging import TaggingConfig


@dataclass
class Inner:
    size: int = 4
    names: tuple[str, ...] = ("a",)


@dataclass
class Outer:
    inner: Inner = field(default_factory=lambda: Inner(size=7))
    rate: float = 0.5


def test_nested_defaults_are_kept_when_only_some_nested_keys_are_given() -> None:
    config = from_dict(TaggingConfig, {"train": {"epochs": 3}})
    assert config.train.epochs == 3
    # The tagging task's own train defaults (not TrainConfig's) must survive.
    assert config.train.monitor == "val_map"
    assert config.train.mode == "max"
    assert config.train.batch_size == 128
    assert config.backbone.name == TaggingConfig().backbone.name


def test_nested_factory_defaults_and_list_to_tuple() -> None:
    config = from_dict(Outer, {"inner": {"names": ["x", "y"]}})
    assert config.inner == Inner(size=7, names=("x", "y"))
    assert config.rate == 0.5


@pytest.mark.parametrize(("data", "culprit"), [
    ({"epochz": 3}, "epochz"),
    ({"train": {"epochs": 3, "learning_rate": 0.1}}, "learning_rate"),
])
def test_unknown_key_is_named(data: dict[str, object], culprit: str) -> None:
    with pytest.raises(ConfigError, match=culprit) as raised:
        from_dict(TaggingConfig, data)
    assert "\n" not in str(raised.value)


def test_nested_unknown_key_names_its_path() -> None:
    with pytest.raises(ConfigError, match=r"config\.train"):
        from_dict(TaggingConfig, {"train": {"epoch": 3}})


def test_invalid_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="optimizer"):
        from_dict(TrainConfig, {"optimizer": "rmsprop"})
    with pytest.raises(ConfigError, match="epochs"):
        from_dict(TaggingConfig, {"train": {"epochs": 0}})


def test_wrong_kind_of_value_names_the_key() -> None:
    # from_dict's contract: "a value of the wrong kind" is a ConfigError naming the key path.
    with pytest.raises(ConfigError, match="batch_size"):
        from_dict(TrainConfig, {"batch_size": "big"})


def test_yaml_file_with_overrides(tmp_path: Path) -> None:
    path = tmp_path / "tagging.yaml"
    path.write_text("hidden: 256\nloss: bce\ntrain:\n  epochs: 5\n  lr: 0.01\nbackbone:\n  name: resnet18\n")
    config = load_config(TaggingConfig, path, overrides={"train.epochs": 2, "backbone.freeze": 1, "dropout": None})
    assert (config.hidden, config.loss, config.dropout) == (256, "bce", 0.5)  # None override = not given
    assert (config.train.epochs, config.train.lr, config.train.monitor) == (2, 0.01, "val_map")
    assert (config.backbone.name, config.backbone.freeze) == ("resnet18", 1)
    assert to_dict(config)["train"]["epochs"] == 2


def test_defaults_without_a_file_and_dotted_override_into_empty_section() -> None:
    config = load_config(TaggingConfig, None, overrides={"train.seed": 7})
    assert config.train.seed == 7
    assert config.train.monitor == "val_map"


def test_yaml_exponent_notation_is_a_number(tmp_path: Path) -> None:
    # PyYAML reads "1e-3" (no dot) as a string; a learning rate written the usual way must still work.
    path = tmp_path / "train.yaml"
    path.write_text("lr: 1e-3\nweight_decay: 1e-4\n")
    config = load_config(TrainConfig, path)
    assert config.lr == pytest.approx(1e-3)
    assert config.weight_decay == pytest.approx(1e-4)


@pytest.mark.parametrize(("text", "match"), [
    ("train: [unclosed\n", "cannot parse YAML"),
    ("- just\n- a list\n", "mapping"),
])
def test_bad_yaml_is_a_config_error_naming_the_file(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as raised:
        load_config(TaggingConfig, path)
    assert "broken.yaml" in str(raised.value)
    assert "\n" not in str(raised.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load_config(TaggingConfig, tmp_path / "nope.yaml")


def test_unknown_key_in_file_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("train:\n  epocs: 3\n")
    with pytest.raises(ConfigError, match="epocs") as raised:
        load_config(TaggingConfig, path)
    assert "typo.yaml" in str(raised.value)


SHIPPED = SHIPPED_CONFIGS
CONFIG_CLASSES = {"tagging_": TaggingConfig, "hierarchy_": HierarchyConfig, "retrieval_": RetrievalConfig,
                  "street2shop_": RetrievalConfig}


@pytest.mark.parametrize("path", sorted(p for p in SHIPPED.glob("*.yaml") if not p.name.endswith("_taxonomy.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_config_loads_into_its_dataclass(path: Path) -> None:
    kind = next(cls for prefix, cls in CONFIG_CLASSES.items() if path.name.startswith(prefix))
    config = load_config(kind, path)
    assert to_dict(config) == to_dict(from_dict(kind, to_dict(config)))  # survives a round trip


PAPERS = SHIPPED / "papers"
#: Per paper recipe, the elements its config must set (dotted keys of the loaded dataclass).
PAPER_ELEMENTS: dict[str, dict[str, object]] = {
    "tagging_street_fashion_attributes.yaml": {
        "backbone.name": "resnet50", "backbone.input_size": 224,
        "mode": "finetune", "backbone.freeze": 2, "loss": "bce", "positive_weight": 2.0,
        "label_importance": {"gender": 2.0}, "beta": 1.0, "thresholds.method": "fixed", "train.optimizer": "sgd",
        "train.scheduler": "step", "train.lr": 0.001},
    "tagging_jd_fashion_style.yaml": {
        "backbone.name": "densenet121", "backbone.input_size": 224,
        "mode": "per_label", "loss": "weighted_bce", "max_weight": 600.0,
        "beta": 2.0, "thresholds.method": "val", "thresholds.average": "macro", "train.optimizer": "adam"},
    "tagging_imaterialist.yaml": {
        "backbone.name": "inception_v3", "backbone.input_size": 299,
        "mode": "finetune", "backbone.freeze": 0, "loss": "bce", "beta": 1.0,
        "thresholds.average": "micro", "train.lr": 0.0001},
    "hierarchy_hmcn_f.yaml": {
        "backbone.input_size": None,
        "variant": "hmcn", "loss_weighting": "sum", "hidden": 384, "dropout": 0.6, "beta": 0.5,
        "train.optimizer": "adam", "train.lr": 0.001},
    "street2shop_triplet.yaml": {
        "mode": "finetune", "normalize": False, "margin": 4.0, "swap": False, "miner": None, "identity": "item_id",
        "negatives_per_pair": 4, "negatives": "street", "easy_fraction": 0.2, "train.optimizer": "sgd",
        "train.momentum": 0.9, "train.scheduler": "step", "train.gamma": 0.1},
}


def _get(config: object, dotted: str) -> object:
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


def test_every_paper_recipe_is_tested() -> None:
    assert sorted(p.name for p in PAPERS.glob("*.yaml")) == sorted(PAPER_ELEMENTS)


@pytest.mark.parametrize("name", sorted(PAPER_ELEMENTS))
def test_paper_recipe_loads_with_local_weights_and_sets_the_papers_elements(name: str, tmp_path: Path) -> None:
    kind = next(cls for prefix, cls in CONFIG_CLASSES.items() if name.startswith(prefix))
    weights = tmp_path / "imagenet.pth"
    config = load_config(kind, PAPERS / name, {"backbone.weights": str(weights)})
    assert config.backbone.weights == str(weights)  # type: ignore[attr-defined]
    for key, expected in PAPER_ELEMENTS[name].items():
        assert _get(config, key) == expected, key


@pytest.mark.parametrize("cls", [TaggingConfig, HierarchyConfig, RetrievalConfig], ids=lambda c: c.__name__)
def test_legacy_finetune_freeze_becomes_backbone_freeze(cls: type, tmp_path: Path) -> None:
    """Configs of earlier versions (saved config.json files, old YAMLs) kept the fine-tune freeze in a task-level
    ``finetune_freeze`` beside a dead ``backbone.freeze: all``: it is read into ``backbone.freeze``."""
    legacy = {"mode": "finetune", "finetune_freeze": 3, "backbone": {"name": "resnet18", "freeze": "all"}}
    config = from_dict(cls, legacy)
    assert (config.backbone.name, config.backbone.freeze, config.mode) == ("resnet18", 3, "finetune")
    assert "finetune_freeze" not in to_dict(config)
    path = tmp_path / "old.yaml"
    path.write_text("mode: finetune\nfinetune_freeze: 1\n")
    assert load_config(cls, path).backbone.freeze == 1


def test_backbone_freeze_defaults_and_validation() -> None:
    assert TaggingConfig().backbone.freeze == HierarchyConfig().backbone.freeze == 2
    assert RetrievalConfig().backbone.freeze == 5  # retrieval keeps its deeper default
    assert from_dict(RetrievalConfig, {"backbone": {"name": "resnet18"}}).backbone.freeze == 5
    for bad in (-1, "some", True):
        with pytest.raises(ConfigError, match=r"backbone\.freeze"):
            from_dict(TaggingConfig, {"backbone": {"freeze": bad}})


def test_backbone_runtime_is_validated() -> None:
    from fashionlens.models import BackboneConfig

    assert BackboneConfig().runtime == "auto"
    assert from_dict(TaggingConfig, {"backbone": {"runtime": "onnx"}}).backbone.runtime == "onnx"
    with pytest.raises(ConfigError, match="unknown runtime 'tensorrt'"):
        from_dict(TaggingConfig, {"backbone": {"runtime": "tensorrt"}})
    with pytest.raises(ConfigError, match="unknown runtime"):
        BackboneConfig(runtime="tensorrt")


@pytest.mark.parametrize("name", ["tagging_clothing_attributes", "papers/tagging_jd_fashion_style",
                                  "hierarchy_fashion_products.yaml"])
def test_shipped_configs_load_by_name(name: str) -> None:
    assert name.removesuffix(".yaml") in shipped_configs()
    kind = next(cls for prefix, cls in CONFIG_CLASSES.items() if name.split("/")[-1].startswith(prefix))
    file = SHIPPED / f"{name.removesuffix('.yaml')}.yaml"
    assert to_dict(load_config(kind, name)) == to_dict(load_config(kind, file))


def test_a_file_wins_over_a_shipped_name_and_unknown_names_list_shipped_ones(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tagging_clothing_attributes").write_text("hidden: 64\n", encoding="utf-8")
    assert load_config(TaggingConfig, "tagging_clothing_attributes").hidden == 64
    with pytest.raises(ConfigError, match=r"not found: taging_clothing .*shipped: .*papers/tagging_jd_fashion_style"):
        load_config(TaggingConfig, "taging_clothing")
    with pytest.raises(ConfigError, match="not found"):
        load_config(TaggingConfig, "../configs/tagging_clothing_attributes")
