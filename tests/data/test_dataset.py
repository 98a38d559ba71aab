"""ManifestImageDataset: boxes are cropped, bad images raise by name or are skipped by the collate function."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from fashionlens.data.dataset import ManifestImageDataset, collate_skipping
from fashionlens.data.images import DECODE_MAX_SIDE
from fashionlens.data.records import Manifest
from fashionlens.errors import ImageError


def mean_colour(image: Image.Image) -> torch.Tensor:
    """A transform that is easy to check: the mean RGB value in [0, 1]."""
    pixels = torch.tensor(list(image.getdata()), dtype=torch.float32) / 255
    return pixels.mean(dim=0)


def corpus(tmp_path: Path) -> Manifest:
    """Rows: red, green-with-a-red-box, a text file named .jpg, a missing file, blue."""
    Image.new("RGB", (10, 10), (255, 0, 0)).save(tmp_path / "red.png")
    boxed = Image.new("RGB", (20, 20), (0, 255, 0))
    boxed.paste((255, 0, 0), (10, 10, 20, 20))
    boxed.save(tmp_path / "boxed.png")
    (tmp_path / "notes.jpg").write_text("not a photo")
    Image.new("RGB", (10, 10), (0, 0, 255)).save(tmp_path / "blue.png")
    names = ["red.png", "boxed.png", "notes.jpg", "missing.jpg", "blue.png"]
    frame = pd.DataFrame({"path": [str(tmp_path / n) for n in names],
                          "bbox_x0": [None, 10, None, None, None], "bbox_y0": [None, 10, None, None, None],
                          "bbox_x1": [None, 20, None, None, None], "bbox_y1": [None, 20, None, None, None]})
    return Manifest(frame, name="corpus")


def test_items_are_transformed_crops_with_their_row(tmp_path: Path) -> None:
    dataset = ManifestImageDataset(corpus(tmp_path), mean_colour)
    assert len(dataset) == 5
    item = dataset[1]
    assert item is not None
    torch.testing.assert_close(item[0], torch.tensor([1.0, 0.0, 0.0]))  # only the red box, not the green image
    assert item[1] == 1


@pytest.mark.parametrize(("row", "name"), [(2, "notes.jpg"), (3, "missing.jpg")])
def test_bad_image_raises_naming_the_file(tmp_path: Path, row: int, name: str) -> None:
    dataset = ManifestImageDataset(corpus(tmp_path), mean_colour)
    with pytest.raises(ImageError, match=re.escape(name)):
        dataset[row]


def test_skip_bad_images_drops_rows_in_the_loader(tmp_path: Path) -> None:
    dataset = ManifestImageDataset(corpus(tmp_path), mean_colour, skip_bad_images=True)
    assert dataset[2] is None and dataset[3] is None
    batches = list(DataLoader(dataset, batch_size=4, collate_fn=collate_skipping))
    images, rows = batches[0]
    assert rows.tolist() == [0, 1]
    assert images.shape == (2, 3)
    images, rows = batches[1]
    assert rows.tolist() == [4]
    torch.testing.assert_close(images[0], torch.tensor([0.0, 0.0, 1.0]))


def test_all_bad_batch_collates_to_empty_tensors() -> None:
    images, rows = collate_skipping([None, None])
    assert images.numel() == 0
    assert rows.dtype == torch.long and rows.numel() == 0


def test_the_decode_policy_shrinks_before_the_transform(tmp_path: Path) -> None:
    Image.new("RGB", (4 * DECODE_MAX_SIDE, 2 * DECODE_MAX_SIDE)).save(tmp_path / "wide.png")
    manifest = Manifest(pd.DataFrame({"path": [str(tmp_path / "wide.png")]}))
    item = ManifestImageDataset(manifest, lambda image: torch.tensor(image.size))[0]
    assert item is not None
    assert item[0].tolist() == [DECODE_MAX_SIDE, DECODE_MAX_SIDE // 2]
