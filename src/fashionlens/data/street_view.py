"""Street-view simulator: turn catalogue (shop) photos into synthetic "user photos" of the same item.

No street-to-shop pairs (DeepFashion Consumer-to-shop, DeepFashion2, Street2Shop) are available in the shared data,
so development, tests and the simulated benchmark use this stand-in. From a shop photo on a plain background it makes
a "street" view by:

1. cutting the garment out (near-white pixels connected to the border are background; enclosed white parts, e.g. a
   white shirt, stay garment) with a softened edge;
2. a random perspective warp (camera not facing the garment) and scale;
3. pasting it onto a real background: a random crop of a Clothing Attributes street photo (or, without any, a
   noisy flat colour), possibly shifted so that part of the garment falls outside the frame (partial crop);
4. an occluder: a patch of another street photo pasted over part of the garment;
5. lighting: brightness, contrast, a colour cast and a brightness gradient across the frame;
6. Gaussian blur (defocus, motion) and JPEG re-compression noise.

Every image is drawn from its own random stream seeded by (seed, image key, view number), so a view does not depend
on which other images were simulated, and the files are cached. **Results measured on these images are simulated
street-to-shop, never street-to-shop**: the simulator reproduces framing, background, lighting and compression
changes, but not a garment worn on a body, its folds and pose, or a different photo of the same product.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance, ImageFilter
from scipy import ndimage
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as tvf

from fashionlens.data.images import decode_for_model, load_image
from fashionlens.data.records import BBOX_COLUMNS, META_PREFIX, Manifest
from fashionlens.errors import ConfigError, DataError
from fashionlens.io import atomic_path

Range = tuple[float, float]

#: Version of the rendering algorithm, part of the cache key: bump it whenever :meth:`StreetViewSimulator.render`
#: changes, so that cached views made by older code are not reused.
ALGORITHM_VERSION = 1


@dataclass(frozen=True)
class StreetViewConfig:
    """Strengths of each degradation; a probability of 0 or a range of ``(x, x)`` with no effect disables one.

    Attributes:
        size: Side of the square output image, in pixels.
        white_threshold: A pixel whose darkest channel is at least this is "white" (catalogue background).
        scale: Garment's long side as a fraction of the frame.
        perspective: Largest corner displacement of the perspective warp, as a fraction of the garment's size.
        crop_probability: Chance that the garment is shifted partly out of the frame.
        max_crop: Largest fraction of the garment's width/height pushed out of the frame.
        occlusion_probability: Chance of an occluding patch over the garment.
        occlusion_size: Side of the occluder as a fraction of the garment's size.
        brightness: Brightness factor range.
        contrast: Contrast factor range.
        colour_cast: Largest deviation of a channel's gain from 1 (a warm or cold cast).
        gradient: Largest brightness change across the frame (uneven lighting).
        blur: Gaussian blur radius range, in pixels.
        jpeg_quality: JPEG quality range of the re-compression.
    """

    size: int = 224
    white_threshold: int = 235
    scale: Range = (0.55, 0.95)
    perspective: float = 0.15
    crop_probability: float = 0.5
    max_crop: float = 0.25
    occlusion_probability: float = 0.4
    occlusion_size: Range = (0.15, 0.4)
    brightness: Range = (0.65, 1.25)
    contrast: Range = (0.7, 1.15)
    colour_cast: float = 0.12
    gradient: float = 0.3
    blur: Range = (0.0, 1.5)
    jpeg_quality: tuple[int, int] = (30, 85)

    def __post_init__(self) -> None:
        if self.size < 16:
            raise ConfigError(f"street view size must be >= 16 pixels, got {self.size}")
        for name in ("crop_probability", "occlusion_probability", "max_crop"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"street view {name} must lie in 0..1, got {getattr(self, name)}")
        for name in ("scale", "occlusion_size", "brightness", "contrast", "blur", "jpeg_quality"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ConfigError(f"street view {name} must be a range (low, high) with 0 <= low <= high")

    def describe(self) -> str:
        """The settings as stable text (part of the simulator's cache key)."""
        return repr(sorted(asdict(self).items()))


def garment_mask(image: Image.Image, white_threshold: int = 235) -> np.ndarray:
    """Boolean ``(H, W)`` garment mask of a catalogue photo: everything but the white background around it.

    Near-white pixels reachable from the border are background; near-white areas enclosed by the garment are kept.
    A photo with no white background (mask nearly full or empty) is treated as all garment.
    """
    near_white = np.asarray(image.convert("RGB")).min(axis=2) >= white_threshold
    mask = ndimage.binary_fill_holes(~near_white)
    coverage = float(mask.mean())
    if coverage < 0.02 or coverage > 0.98:
        return np.ones_like(near_white)
    return np.asarray(mask, dtype=bool)


class StreetViewSimulator:
    """Makes reproducible synthetic street views of catalogue photos.

    Args:
        backgrounds: Street photos to cut backgrounds and occluders from (e.g. Clothing Attributes ``images/``);
            empty: noisy flat colours instead.
        config: Degradation strengths.
        seed: Seed of every image's random stream (with the image key and view number).
    """

    def __init__(self, backgrounds: Sequence[str | Path] = (), config: StreetViewConfig | None = None, seed: int = 0):
        self.backgrounds = [Path(p).resolve() for p in backgrounds]  # one spelling per file, for the cache key
        self.config = config or StreetViewConfig()
        self.seed = seed

    @classmethod
    def from_folder(cls, folder: str | Path, config: StreetViewConfig | None = None,
                    seed: int = 0) -> StreetViewSimulator:
        """A simulator with every ``.jpg``/``.png`` under ``folder`` as a background photo.

        Raises:
            DataError: ``folder`` does not exist or holds no images.
        """
        root = Path(folder)
        if not root.is_dir():
            raise DataError(f"background folder not found: {root}")
        paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not paths:
            raise DataError(f"no .jpg/.png background photos in {root}")
        return cls(paths, config, seed)

    def digest(self) -> str:
        """A short hash of the algorithm version, settings and backgrounds: the cache folder of their images."""
        names = "|".join(str(p) for p in self.backgrounds)
        text = f"v{ALGORITHM_VERSION}|{self.config.describe()}|{names}"
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def rng(self, key: str, view: int = 0) -> np.random.Generator:
        """The random stream of view ``view`` of the image called ``key``."""
        digest = int(hashlib.sha1(key.encode()).hexdigest()[:15], 16)
        return np.random.default_rng([self.seed, digest, view])

    def render(self, image: Image.Image, key: str, view: int = 0) -> Image.Image:
        """A synthetic street view of ``image``, the same for the same (seed, ``key``, ``view``)."""
        rng = self.rng(key, view)
        cfg = self.config
        garment = self._cut_out(image, rng)
        frame = self._street_patch(rng, cfg.size, cfg.size)
        left, top = self._placement(garment.size, rng)
        frame.paste(garment, (left, top), garment)
        if rng.random() < cfg.occlusion_probability:
            self._occlude(frame, (left, top, left + garment.width, top + garment.height), rng)
        frame = self._light(frame, rng)
        radius = rng.uniform(*cfg.blur)
        if radius > 0:
            frame = frame.filter(ImageFilter.GaussianBlur(radius))
        buffer = io.BytesIO()
        frame.save(buffer, format="JPEG", quality=int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")

    def _cut_out(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        """The garment as RGBA (soft alpha), cropped to it, warped in perspective and scaled into the frame."""
        mask = garment_mask(image, self.config.white_threshold)
        alpha = Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.GaussianBlur(1.0))
        garment = image.convert("RGB").copy()
        garment.putalpha(alpha)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        garment = garment.crop((int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1))
        width, height = garment.size
        shift = self.config.perspective * np.array([width, height])
        corners = [[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]]
        moved = [[int(round(x + rng.uniform(-1, 1) * shift[0])), int(round(y + rng.uniform(-1, 1) * shift[1]))]
                 for x, y in corners]
        garment = tvf.perspective(garment, corners, moved, InterpolationMode.BILINEAR, fill=[0, 0, 0, 0])
        long_side = rng.uniform(*self.config.scale) * self.config.size
        factor = long_side / max(width, height)
        return garment.resize((max(1, round(width * factor)), max(1, round(height * factor))),
                              Image.Resampling.BILINEAR)

    def _placement(self, garment_size: tuple[int, int], rng: np.random.Generator) -> tuple[int, int]:
        """Top-left corner of the garment: inside the frame, or partly outside it (partial crop)."""
        size = self.config.size
        position = []
        for extent in garment_size:
            low, high = 0, max(0, size - extent)
            if rng.random() < self.config.crop_probability:
                overflow = int(self.config.max_crop * extent)
                low, high = -overflow, high + overflow
            position.append(int(rng.integers(low, high + 1)))
        return position[0], position[1]

    def _street_patch(self, rng: np.random.Generator, width: int, height: int) -> Image.Image:
        """A ``width`` x ``height`` patch of a random background photo (or a noisy flat colour)."""
        if not self.backgrounds:
            colour = rng.integers(30, 226, size=3)
            noise = rng.normal(0, 12, size=(height, width, 3))
            return Image.fromarray(np.clip(colour + noise, 0, 255).astype(np.uint8))
        photo = load_image(self.backgrounds[int(rng.integers(len(self.backgrounds)))], max_side=400)
        side = int(min(photo.size) * rng.uniform(0.4, 1.0))
        left = int(rng.integers(0, photo.width - side + 1))
        top = int(rng.integers(0, photo.height - side + 1))
        return photo.crop((left, top, left + side, top + side)).resize((width, height), Image.Resampling.BILINEAR)

    def _occlude(self, frame: Image.Image, box: tuple[int, int, int, int], rng: np.random.Generator) -> None:
        """Paste a patch of another street photo over part of the garment's box (an arm, a bag, a passer-by)."""
        left, top, right, bottom = box
        side = int(rng.uniform(*self.config.occlusion_size) * max(right - left, bottom - top))
        if side < 2:
            return
        x = int(rng.integers(left - side // 2, max(left - side // 2, right - side // 2) + 1))
        y = int(rng.integers(top - side // 2, max(top - side // 2, bottom - side // 2) + 1))
        frame.paste(self._street_patch(rng, side, side), (x, y))

    def _light(self, frame: Image.Image, rng: np.random.Generator) -> Image.Image:
        """Brightness, contrast, colour cast and a linear brightness gradient in a random direction."""
        cfg = self.config
        frame = ImageEnhance.Brightness(frame).enhance(rng.uniform(*cfg.brightness))
        frame = ImageEnhance.Contrast(frame).enhance(rng.uniform(*cfg.contrast))
        pixels = np.asarray(frame, dtype=np.float32)
        gains = 1.0 + rng.uniform(-cfg.colour_cast, cfg.colour_cast, size=3)
        angle = rng.uniform(0, 2 * np.pi)
        ys, xs = np.mgrid[0:frame.height, 0:frame.width] / max(frame.size) - 0.5
        ramp = 1.0 + rng.uniform(0, cfg.gradient) * (np.cos(angle) * xs + np.sin(angle) * ys)
        return Image.fromarray(np.clip(pixels * gains * ramp[..., None], 0, 255).astype(np.uint8))

    def simulate_manifest(self, manifest: Manifest, out_dir: str | Path, views: int = 1) -> Manifest:
        """Write ``views`` street views of every row's image (cropped to its box) and return them as a manifest.

        Files go to ``out_dir/<seed>/<digest>/`` (see :meth:`digest`) and are reused when present, so a second call
        only reads. Each output row keeps its source row's ``split``, ``item_id``, labels and metadata, has
        ``domain`` ``street``, no box, ``meta:simulated`` = ``"true"`` and ``meta:source_path``; the manifest is
        named ``<name>+simulated-street`` so that results on it are reported as simulated.

        Raises:
            ImageError: A source image cannot be read (the file is named).
        """
        if views < 1:
            raise ConfigError(f"views must be >= 1, got {views}")
        folder = Path(out_dir) / str(self.seed) / self.digest()
        folder.mkdir(parents=True, exist_ok=True)
        boxes = manifest.frame[list(BBOX_COLUMNS)].to_numpy(dtype=float)
        frames = []
        for view in range(views):
            paths = []
            for source, box in zip(manifest.frame["path"], boxes, strict=True):
                bbox = None if np.isnan(box).any() else (box[0], box[1], box[2], box[3])
                key = f"{source}|{bbox}"
                target = folder / f"{hashlib.sha1(key.encode()).hexdigest()[:20]}-v{view}.jpg"
                if not target.is_file():
                    picture = self.render(decode_for_model(source, bbox=bbox).image, key, view)
                    with atomic_path(target, durable=False) as tmp:
                        picture.save(tmp, format="JPEG", quality=95)
                paths.append(str(target))
            frame = manifest.frame.copy()
            frame[META_PREFIX + "source_path"] = frame["path"]
            frame["path"], frame["domain"], frame[META_PREFIX + "simulated"] = paths, "street", "true"
            frame[list(BBOX_COLUMNS)] = np.nan
            frames.append(frame)
        return Manifest(pd.concat(frames, ignore_index=True), name=f"{manifest.name}+simulated-street",
                        stats={"simulated_views": len(manifest) * views})
