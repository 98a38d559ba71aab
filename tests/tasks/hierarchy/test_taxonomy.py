"""Taxonomy building: inconsistency detection and policies, rare classes, label encoding, decoding, YAML trees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fashionlens.config import SHIPPED_CONFIGS
from fashionlens.data.records import Manifest
from fashionlens.errors import ConfigError, DataError
from fashionlens.tasks.hierarchy import Taxonomy, find_conflicts

LEVELS = ["master", "sub", "article"]
CONFIGS = SHIPPED_CONFIGS


def manifest_of(rows: list[tuple[str, str, str, int, str]]) -> Manifest:
    """A manifest from ``(master, sub, article, count, split)`` groups of identical rows."""
    records = [{"path": f"{i}.jpg", "split": split, "class:master": m, "class:sub": s, "class:article": a}
               for i, (m, s, a, n, split) in enumerate(r for r in rows for _ in range(r[3]))]
    for i, record in enumerate(records):
        record["path"] = f"img{i}.jpg"
    return Manifest(pd.DataFrame(records), name="toy")


# Sandals: 5 rows under Sandal, 2 under Shoes -- a child under two parents, as in Fashion Product Images.
TOY = [
    ("Apparel", "Topwear", "Tshirts", 8, "train"),
    ("Apparel", "Topwear", "Shirts", 6, "train"),
    ("Apparel", "Topwear", "Shrug", 1, "train"),
    ("Apparel", "Bottomwear", "Jeans", 6, "train"),
    ("Footwear", "Sandal", "Sandals", 5, "train"),
    ("Footwear", "Shoes", "Sandals", 2, "train"),
    ("Footwear", "Shoes", "Sneakers", 6, "train"),
    ("Apparel", "Topwear", "Tshirts", 3, "val"),
    ("Footwear", "Shoes", "Sandals", 1, "val"),
    ("Apparel", "Topwear", "Shrug", 1, "val"),
]


def names_of(taxonomy: Taxonomy, targets: np.ndarray) -> list[list[str]]:
    return [taxonomy.path_names(t) for t in targets]


def test_find_conflicts_names_child_and_parent_counts() -> None:
    frame = manifest_of(TOY).frame.rename(columns=lambda c: c.removeprefix("class:"))
    conflicts = find_conflicts(frame, LEVELS)
    assert [(c.level, c.child, c.parents) for c in conflicts] == [("article", "Sandals", {"Sandal": 5, "Shoes": 3})]


def test_error_policy_raises_one_line_naming_the_child() -> None:
    with pytest.raises(DataError, match=r"article 'Sandals' is under 2 parents: 'Sandal' \(5 rows\), 'Shoes'"):
        Taxonomy.from_manifest(manifest_of(TOY), LEVELS, conflicts="error")


def test_majority_moves_minority_rows_to_the_majority_parent() -> None:
    manifest = manifest_of(TOY)
    taxonomy = Taxonomy.from_manifest(manifest, LEVELS, conflicts="majority")
    sandals = taxonomy.classes[2].index("Sandals")
    assert taxonomy.classes[1][taxonomy.parents[2][sandals]] == "Sandal"
    encoded = taxonomy.encode(manifest)
    raw = manifest.class_column("article").to_numpy()
    assert {tuple(p) for p in names_of(taxonomy, encoded.targets[raw == "Sandals"])} == {
        ("Footwear", "Sandal", "Sandals")}
    assert encoded.rewritten == {"master": 0, "sub": 3, "article": 0}
    assert "moved there" in taxonomy.report.conflicts[0].resolution


def test_split_policy_makes_one_node_per_parent_and_resolves_rows_by_full_path() -> None:
    manifest = manifest_of(TOY)
    taxonomy = Taxonomy.from_manifest(manifest, LEVELS, conflicts="split")
    assert {"Sandals (Sandal)", "Sandals (Shoes)"} <= set(taxonomy.classes[2])
    assert "Sandals" not in taxonomy.aliases  # the bare name is ambiguous
    encoded = taxonomy.encode(manifest)
    raw = manifest.frame[["class:sub", "class:article"]].agg(" / ".join, axis=1)
    resolved = {r: tuple(p) for r, p in zip(raw, names_of(taxonomy, encoded.targets), strict=True)}
    assert resolved["Shoes / Sandals"] == ("Footwear", "Shoes", "Sandals (Shoes)")
    assert resolved["Sandal / Sandals"] == ("Footwear", "Sandal", "Sandals (Sandal)")
    leaf_only = Manifest(manifest.frame.drop(columns=["class:sub"]), name="leaf-only")
    assert taxonomy.encode(leaf_only).ambiguous == 8


@pytest.mark.parametrize("rare", ["other", "drop"])
def test_rare_classes_counted_on_training_rows(rare: str) -> None:
    manifest = manifest_of(TOY)
    taxonomy = Taxonomy.from_manifest(manifest, LEVELS, conflicts="majority", min_count=2, rare=rare)  # type: ignore[arg-type]
    encoded = taxonomy.encode(manifest)
    shrug = (manifest.class_column("article") == "Shrug").to_numpy()
    if rare == "other":
        assert "Shrug" not in taxonomy.classes[2]
        assert {tuple(p) for p in names_of(taxonomy, encoded.targets[shrug])} == {
            ("Apparel", "Topwear", "Other (Apparel > Topwear)")}
        assert taxonomy.catch_all == {"Other (Apparel > Topwear)"}
        assert encoded.excluded == 0
    else:
        assert (encoded.targets[shrug] == -1).all()
        assert encoded.dropped == 2 and encoded.excluded == 2
        assert taxonomy.report.dropped["article"] == ["Shrug"]


def test_rare_parent_collapses_its_subtree_into_one_chain() -> None:
    rows = [*TOY, ("Sporting Goods", "Sports Equipment", "Footballs", 1, "train")]
    taxonomy = Taxonomy.from_manifest(manifest_of(rows), LEVELS, min_count=2, rare="other")
    encoded = taxonomy.encode(manifest_of([("Sporting Goods", "Sports Equipment", "Footballs", 1, "val")]))
    assert names_of(taxonomy, encoded.targets) == [["Other", "Other", "Other"]]
    assert taxonomy.is_consistent(taxonomy.leaf_paths()).all()


def test_unknown_and_unlabelled_rows_get_no_target() -> None:
    taxonomy = Taxonomy.from_manifest(manifest_of(TOY), LEVELS)
    frame = pd.DataFrame({"path": ["a", "b"], "class:article": ["Kimono", ""]})
    encoded = taxonomy.encode(Manifest(frame))
    assert (encoded.targets == -1).all() and encoded.unknown == 1 and encoded.unlabelled == 1


def test_consistency_decoding_and_marginals() -> None:
    taxonomy = Taxonomy(levels=("type", "category"), classes=(("lower", "upper"), ("Jeans", "Skirt", "Tee")),
                        parents=((), (0, 0, 1)))
    assert taxonomy.leaf_paths().tolist() == [[0, 0], [0, 1], [1, 2]]
    assert taxonomy.is_consistent(np.array([[0, 1], [0, 2]])).tolist() == [True, False]
    # Greedy says upper + Jeans (inconsistent); the best full path is lower > Jeans (0.45*0.5 > 0.55*0.3).
    upper = np.array([[0.45, 0.55]])
    leaf = np.array([[0.5, 0.2, 0.3]])
    assert taxonomy.decode_consistent([upper, leaf]).tolist() == [[0, 0]]
    np.testing.assert_allclose(taxonomy.marginals(leaf)[0], [[0.7, 0.3]])


def test_invalid_structures_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="more than once"):
        Taxonomy(levels=("a",), classes=(("x", "x"),), parents=((),))
    with pytest.raises(ConfigError, match="parent index"):
        Taxonomy(levels=("a", "b"), classes=(("x",), ("y",)), parents=((), (3,)))


def test_json_roundtrip_keeps_structure_aliases_and_report() -> None:
    taxonomy = Taxonomy.from_manifest(manifest_of(TOY), LEVELS, conflicts="split", min_count=2)
    restored = Taxonomy.from_json(taxonomy.to_json())
    assert restored == taxonomy
    assert restored.report.lines() == taxonomy.report.lines()


def test_yaml_tree_with_leaf_counts_and_duplicate_detection(tmp_path: Path) -> None:
    path = tmp_path / "tax.yaml"
    path.write_text("levels: [type, category]\ntree:\n  upper: [Tee, Blouse]\n  full: [Dress, Blouse]\n")
    with pytest.raises(DataError, match="'Blouse' is under 2 parents"):
        Taxonomy.from_yaml(path)
    taxonomy = Taxonomy.from_yaml(path, conflicts="majority", leaf_counts={"Tee": 9, "Dress": 9, "Blouse": 4})
    blouse = taxonomy.classes[1].index("Blouse")
    assert taxonomy.classes[0][taxonomy.parents[1][blouse]] == "upper"  # a tie goes to the parent listed first
    path.write_text("levels: [type, category]\ntree:\n  upper: {Tee: [a]}\n")
    with pytest.raises(ConfigError, match=r"tree\['upper'\] must be a non-empty list"):
        Taxonomy.from_yaml(path)


def test_deepfashion_taxonomy_config_groups_50_categories() -> None:
    taxonomy = Taxonomy.from_yaml(CONFIGS / "deepfashion_taxonomy.yaml")
    assert taxonomy.levels == ("category_type", "category") and taxonomy.sizes == [3, 50]
    frame = pd.DataFrame({"path": ["a", "b", "c"], "class:category": ["Blouse", "Jeans", "Romper"]})
    encoded = taxonomy.encode(Manifest(frame))
    assert [p[0] for p in names_of(taxonomy, encoded.targets)] == ["upper", "lower", "full"]


def test_real_fashion_product_conflicts_are_found(shared_data: Path) -> None:
    from fashionlens.data.readers.fashion_product import HIERARCHY, read_fashion_product_images

    manifest = read_fashion_product_images(shared_data / "fashion-product-images")
    with pytest.raises(DataError, match="3 inconsistent articleType") as error:
        Taxonomy.from_manifest(manifest, HIERARCHY, conflicts="error")
    assert all(name in str(error.value) for name in ("Flip Flops", "Messenger Bag", "Sandals"))
    taxonomy = Taxonomy.from_manifest(manifest, HIERARCHY, conflicts="majority", min_count=5)
    encoded = taxonomy.encode(manifest)
    assert encoded.excluded == 0 and taxonomy.is_consistent(encoded.targets).all()
