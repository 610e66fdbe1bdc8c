"""ModelNet40 front/rear views (Wu et al., ICML 2022, docs/PAPER.md sections 1 and 6): the MVCNN shaded 12-view renders.

Layout (docs/DATA.md): ``<root>/<class>/<train|test>/<class>_<NNNN>.obj.shaded_v001.png .. _v012.png``, a camera ring
at 30 degree steps. Two views are the two modalities (default v001 and v007, 180 degrees apart, named "view0" and
"view6"; branch k reads views[k]). Classes are the class folders found, sorted (the real set gives 40).
Inputs: RGB in [0, 1], ImageNet mean/std normalization, random horizontal flip in training, native size unless
``size`` asks for a resize. Validation: a seeded stratified 20% of the official train folder; test: the test folder.

The flip is drawn once per item and applied to both views ("joint", the default). For views 180 degrees apart
(the default pair) the two flipped images are exactly the two views of the mirrored object (the mirror plane holds
both cameras' axes), so the pair stays a consistent item; flipping each view on its own (the authors' per-image
torchvision transform, ``flip="independent"``) pairs the front of one object with the rear of its mirror image.

Decoding two PNGs per item every epoch is slow, so each folder (train, test) is decoded once into a uint8 array
(N, 2, H, W, 3) under ``<root>/.greedymm_cache/``, read back with np.load(mmap_mode="r"). Its file name carries
a fingerprint of the source files (relative paths, sizes, mtimes), the views and the size: any change gives a
new name, so a stale cache is never read; it is rebuilt and the old one removed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..atomic import atomic_path
from .base import MultiModalData, register_dataset, stratified_split
from .fetch import data_root
from .idx import DataFormatError

NUM_VIEWS = 12
STANDIN_MARKER = "STANDIN.json"  # written by data/modelnet_standin.py; marks a set as not real ModelNet40
CACHE_DIR = ".greedymm_cache"
CACHE_VERSION = 1  # bump when the cache's content or layout changes
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FLIPS = ("joint", "independent", "none")
SPLITS = ("train", "test")
_CHUNK = 256  # items decoded per batch of threads while building a cache
_VIEW_FILE = re.compile(r"^(?P<obj>.+)\.obj\.shaded_v(?P<view>\d{3})\.png$")
_HINT = "see docs/DATA.md (ModelNet40) or run `greedymm data make modelnet-standin`"


def view_filename(obj: str, view: int) -> str:
    """File name of 0-based ``view`` of object ``obj`` (e.g. "airplane_0001", 0 -> ...shaded_v001.png)."""
    return f"{obj}.obj.shaded_v{view + 1:03d}.png"


# ---------------------------------------------------------------------------------------------- scanning


@dataclass(frozen=True)
class FolderScan:
    """The items of one split folder across classes: the two view files of each, and its label."""

    files: tuple[tuple[Path, Path], ...]
    labels: tuple[int, ...]
    fingerprint: str  # of relative paths, sizes and mtimes of every file read


def _scan_folder(root: Path, cls: str, split: str, views: tuple[int, int]) -> list[tuple[Path, Path]]:
    folder = root / cls / split
    if not folder.is_dir():
        raise DataFormatError(
            f"class folder {root / cls} has no {split}/ folder; every class needs train/ and test/ holding "
            f"<class>_NNNN.obj.shaded_v001.png .. _v012.png ({_HINT})"
        )
    present: dict[str, set[int]] = {}
    for entry in os.scandir(folder):
        m = _VIEW_FILE.match(entry.name)
        if m:
            present.setdefault(m["obj"], set()).add(int(m["view"]) - 1)
    if not present:
        raise DataFormatError(f"class folder {root / cls} has no {split} items: no *.obj.shaded_vNNN.png in {folder}")
    items = []
    for obj in sorted(present):
        for v in views:
            if v not in present[obj]:
                raise FileNotFoundError(
                    f"object {obj} in {folder} lacks view {v} ({folder / view_filename(obj, v)}); restore that "
                    "file, remove the object's other views, or pick other views with views=(a, b)"
                )
        items.append((folder / view_filename(obj, views[0]), folder / view_filename(obj, views[1])))
    return items


def scan(root: Path, views: tuple[int, int], size: int | None) -> tuple[list[str], dict[str, FolderScan]]:
    """Class names (sorted folder names) and, per split, its items; the fingerprint covers views and size."""
    if not root.is_dir():
        raise FileNotFoundError(f"no ModelNet40 renders under {root}; {_HINT}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise FileNotFoundError(f"no ModelNet40 renders under {root} (no class folders); {_HINT}")
    scans = {}
    for split in SPLITS:
        files, labels = [], []
        h = hashlib.sha256(json.dumps([CACHE_VERSION, split, list(views), size]).encode())
        for label, cls in enumerate(classes):
            for pair in _scan_folder(root, cls, split, views):
                files.append(pair)
                labels.append(label)
                for p in pair:
                    st = p.stat()
                    h.update(f"{p.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        scans[split] = FolderScan(tuple(files), tuple(labels), h.hexdigest()[:20])
    return classes, scans


# ------------------------------------------------------------------------------------------------ decoding


def read_image(path: Path, size: int | None = None) -> np.ndarray:
    """One render as RGB uint8 (H, W, 3), resized to (size, size) when ``size`` is given."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")  # forces the full decode, so a truncated file fails here
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path} is gone since the folder was scanned; restore it ({_HINT})") from err
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        # UnidentifiedImageError and "image file is truncated" are OSErrors; a broken chunk raises SyntaxError
        raise DataFormatError(
            f"cannot decode {path} ({err}); the PNG is damaged or truncated: restore it from the original archive "
            "(for a stand-in, run `greedymm data make modelnet-standin` again)"
        ) from err


def read_item(files: tuple[Path, Path], size: int | None) -> np.ndarray:
    """Both views of one item, (2, H, W, 3) uint8."""
    a, b = (read_image(p, size) for p in files)
    if a.shape != b.shape:
        raise DataFormatError(
            f"{files[0]} is {a.shape[1]}x{a.shape[0]} but {files[1]} is {b.shape[1]}x{b.shape[0]}; all renders "
            "must share one size, or pass size=N to resize them"
        )
    return np.stack([a, b])


def _check_shape(item: np.ndarray, files: tuple[Path, Path], shape: tuple[int, ...]) -> np.ndarray:
    if item.shape != shape:
        raise DataFormatError(
            f"{files[0]} is {item.shape[2]}x{item.shape[1]}, unlike the first render ({shape[2]}x{shape[1]}); "
            "all renders must share one size, or pass size=N to resize them"
        )
    return item


def build_cache(scan_: FolderScan, path: Path, size: int | None, desc: str = "caching") -> None:
    """Decode every item of ``scan_`` into ``path`` (N, 2, H, W, 3) uint8; written to a temp file, then renamed."""
    from tqdm import tqdm

    path.parent.mkdir(parents=True, exist_ok=True)
    first = read_item(scan_.files[0], size)
    with atomic_path(path, suffix=".npy.tmp") as tmp:
        # a memmap, so the real 224 px train set (about 3 GB) never has to fit in memory
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(scan_.files), *first.shape))
        out[0] = first
        # PIL releases the GIL while decoding, so threads give a real speed-up; chunks bound the decoded items
        # waiting in memory (pool.map submits everything it is given at once)
        with (
            ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool,
            tqdm(total=len(scan_.files), initial=1, desc=desc, unit="obj") as bar,
        ):
            for start in range(1, len(scan_.files), _CHUNK):
                chunk = scan_.files[start : start + _CHUNK]
                for i, item in enumerate(pool.map(lambda f: _check_shape(read_item(f, size), f, first.shape), chunk)):
                    out[start + i] = item
                bar.update(len(chunk))
        out.flush()
        del out


def cached_images(root: Path, split: str, scan_: FolderScan, views: tuple[int, int], size: int | None) -> np.ndarray:
    """The split's (N, 2, H, W, 3) uint8 memmap, built first when missing or stale."""
    prefix = f"{split}-v{views[0]}-{views[1]}-{'native' if size is None else size}-"
    path = root / CACHE_DIR / f"{prefix}{scan_.fingerprint}.npy"
    if path.is_file():
        try:
            arr = np.load(path, mmap_mode="r")
            if arr.dtype == np.uint8 and arr.ndim == 5 and arr.shape[:2] == (len(scan_.files), 2):
                return arr
        except (OSError, ValueError):
            pass  # unreadable (e.g. a foreign file under that name): rebuild it
    try:
        build_cache(scan_, path, size, desc=f"caching {root.name}/{split}")
    except OSError as err:
        if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise PermissionError(
            f"cannot write the decoded-image cache under {root / CACHE_DIR} ({err}); make it writable or load with "
            "cache=False (`--set data.cache=false`, slower: decodes PNGs every batch)"
        ) from err
    for old in path.parent.glob(f"{prefix}*.npy"):
        if old != path:  # the same views and size over older source files: stale
            old.unlink(missing_ok=True)
    return np.load(path, mmap_mode="r")


# ---------------------------------------------------------------------------------------------- the split


class ModelNetSplit:
    """Items ``rows`` of one split folder; images from the cache memmap, or decoded per batch when it is None."""

    def __init__(
        self,
        modalities: tuple[str, str],
        files: tuple[tuple[Path, Path], ...],
        labels: Tensor,
        rows: np.ndarray,
        images: np.ndarray | None,
        size: int | None,
        flip: str = "joint",
    ) -> None:
        if len(rows) == 0:
            raise ValueError("empty split: it holds no items; check the data folder and val_fraction")
        self.modalities, self.files, self.images, self.size, self.flip = modalities, files, images, size, flip
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = labels[torch.from_numpy(self.rows)].contiguous()  # (N,) int64
        self._mean = torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1)

    def __len__(self) -> int:
        return len(self.rows)

    def raw(self, idx: Tensor) -> np.ndarray:
        """The uint8 images (B, 2, H, W, 3) of items ``idx``, as stored (no flip, no normalization)."""
        rows = self.rows[np.asarray(torch.as_tensor(idx).cpu(), dtype=np.int64).reshape(-1)]
        if self.images is not None:
            return np.asarray(self.images[rows])
        return np.stack([read_item(self.files[r], self.size) for r in rows])

    def batch(self, idx: Tensor, train: bool = False) -> tuple[dict[str, Tensor], Tensor]:
        x = torch.from_numpy(self.raw(idx)).permute(0, 1, 4, 2, 3).float().div_(255)  # (B, 2, 3, H, W)
        x = (x - self._mean) / self._std
        if train and self.flip != "none":
            # torch's global RNG: a resumed run restores its state and so draws the same flips
            draw = torch.rand(len(x), 1 if self.flip == "joint" else 2) < 0.5  # (B, 1) or (B, 2)
            x = torch.where(draw.expand(len(x), 2)[:, :, None, None, None], x.flip(-1), x)
        labels = self.labels[torch.as_tensor(idx).cpu().long()]
        return {self.modalities[0]: x[:, 0].contiguous(), self.modalities[1]: x[:, 1].contiguous()}, labels


# ------------------------------------------------------------------------------------------------- loader


def _parse_views(views: Any) -> tuple[int, int]:
    if isinstance(views, str):  # e.g. "0,6" from a command line
        views = [v for v in re.split(r"[,\s]+", views.strip("()[] ")) if v]
    try:
        a, b = (int(v) for v in views)
    except (TypeError, ValueError) as err:
        raise ValueError(f"views must be two view indices in 0..11, e.g. (0, 6), got {views!r}") from err
    if not (0 <= a < NUM_VIEWS and 0 <= b < NUM_VIEWS) or a == b:
        raise ValueError(f"views must be two different indices in 0..{NUM_VIEWS - 1}, got {views!r}")
    return a, b


def _source(root: Path) -> dict[str, Any]:
    marker = root / STANDIN_MARKER
    if not marker.is_file():
        return {"real_data": True, "source": "MVCNN shaded 12-view renders", "note": "ModelNet40 renders"}
    try:
        info = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        info = {}
    params = ", ".join(
        f"{k}={info[k]}" for k in ("classes", "per_class", "test_per_class", "size", "seed") if k in info
    )
    return {
        "real_data": False,
        "source": f"procedural stand-in (`greedymm data make modelnet-standin`; {params})",
        "note": "procedural stand-in, NOT ModelNet40: numbers from it are not comparable to ModelNet40 results",
    }


def load_modelnet(
    name: str,
    root: Path,
    val_fraction: float = 0.2,
    data_seed: int = 0,
    views: Any = (0, 6),
    size: int | None = None,
    cache: bool = True,
    arch: str = "resnet18",
    flip: str = "joint",
) -> MultiModalData:
    """Read the renders under ``root`` into train / validation / test splits (see the module docstring).

    ``flip``: "joint" (default) flips both views of an item together; "independent" flips each view on its own
    (the authors' per-image torchvision transform); "none" turns the augmentation off.
    """
    views = _parse_views(views)
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"size must be None (native size) or a positive int, got {size!r}")
    if not isinstance(cache, bool):
        raise ValueError(f"cache must be true or false, got {cache!r}")
    if flip not in FLIPS:
        raise ValueError(f"flip must be one of {FLIPS}, got {flip!r}")
    root = Path(root)
    classes, scans = scan(root, views, size)
    source = _source(root)
    if source["real_data"] and name == "modelnet40" and len(classes) != 40:
        warnings.warn(f"{root} holds {len(classes)} class folders, not ModelNet40's 40", stacklevel=2)
    modalities = (f"view{views[0]}", f"view{views[1]}")

    def images(split: str) -> np.ndarray | None:
        return cached_images(root, split, scans[split], views, size) if cache else None

    train_labels = torch.tensor(scans["train"].labels, dtype=torch.long)
    keep, held = stratified_split(train_labels, val_fraction, seed=data_seed)
    train_images = images("train")

    def split(s: str, rows: np.ndarray, imgs: np.ndarray | None) -> ModelNetSplit:
        labels = torch.tensor(scans[s].labels, dtype=torch.long)
        return ModelNetSplit(modalities, scans[s].files, labels, rows, imgs, size, flip)

    test_rows = np.arange(len(scans["test"].files))
    return MultiModalData(
        name=name,
        modalities=modalities,
        in_channels=(3, 3),
        num_classes=len(classes),
        arch=arch,
        train=split("train", keep.numpy(), train_images),
        val=split("train", held.numpy(), train_images),
        test=split("test", test_rows, images("test")),
        source={**source, "root": str(root), "views": list(views), "size": size},
    )


def _loader(name: str):
    def load(
        data_dir: str | Path | None = None,
        val_fraction: float = 0.2,
        data_seed: int = 0,
        views: Any = (0, 6),
        size: int | None = None,
        cache: bool = True,
        root: str | Path | None = None,
        arch: str = "resnet18",
        flip: str = "joint",
        **unknown: Any,
    ) -> MultiModalData:
        if unknown:
            valid = "views, size, cache, root, arch, flip (and data_dir, val_fraction, data_seed)"
            raise ValueError(f"{name} has no options {sorted(unknown)}; valid: {valid}")
        where = Path(root) if root is not None else data_root(data_dir) / name
        return load_modelnet(name, where, val_fraction, data_seed, views, size, cache, arch, flip)

    load.__name__ = f"load_{name.replace('-', '_')}"
    return load


load_modelnet40 = register_dataset(
    "modelnet40", "ModelNet40 front/rear views from the MVCNN shaded 12-view renders (<data>/modelnet40)"
)(_loader("modelnet40"))
load_modelnet40_standin = register_dataset(
    "modelnet40-standin",
    "procedural ModelNet40 stand-in, same layout (<data>/modelnet40-standin; `greedymm data make modelnet-standin`)",
)(_loader("modelnet40-standin"))
