"""NVGesture (NVIDIA Dynamic Hand Gesture, Molchanov et al. CVPR 2016), RGB (m0) + depth (m1); DATA.md.

Layout read here, exactly as NVIDIA ships it (and as ``nvgesture_standin`` writes its synthetic stand-in)::

    <root>/nvgesture_train_correct_cvpr2016_v2.lst   (1,050 lines)  and  ..._test_... (482 lines)
    <root>/Video_data/class_XX/subject<S>_r<R>/{sk_color.avi, sk_depth.avi, duo_left.avi}

A list line: ``path:./Video_data/class_01/subject13_r0 depth:sk_depth:138:218 color:sk_color:138:218
duo_left:duo_left:161:254 label:1``; sensor tokens are ``<sensor>:<file stem>:<start>:<end>``, labels 1..25.

Each item is the 80-frame gesture window of sk_color and sk_depth (OpenCV, seek to the start frame, read
end-start frames). A window of another length is resampled to 80 frames (uniform indices), so every item has
the same shape. Frames are resized to ``size`` x ``size`` (the whole 320x240 frame, squashed: no crop can cut the
hand off). ``frames`` of the 80 are fed to the model: evenly spaced in val/test, evenly spaced from a random
offset in train (torch's global RNG, so a resumed run that restores it sees the same clips). No horizontal flip:
it would swap "move left" and "move right". Depth videos are 3-channel; channel 0 is kept.

Decoding is slow, so by default every window is decoded once into ``<root>/.greedymm_cache/`` (uint8, one .npy
per split and sensor, memory-mapped), keyed by a fingerprint of the list files, the videos they name (size,
mtime) and ``size``; a changed source gives a new fingerprint and a rebuild.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor

from .base import MultiModalData, register_dataset, stratified_split
from .fetch import data_root
from .idx import DataFormatError

LIST_FILES = {"train": "nvgesture_train_correct_cvpr2016_v2.lst", "test": "nvgesture_test_correct_cvpr2016_v2.lst"}
VIDEO_DIR = "Video_data"
SENSORS = {"rgb": "color", "depth": "depth"}  # modality -> sensor token in the list lines
STANDIN_FILE = "STANDIN.json"  # written by the stand-in generator; its presence means "not the real data"
CACHE_DIR = ".greedymm_cache"
CACHE_VERSION = 1  # bump when the cache layout or the decoding changes
NUM_CLASSES = 25
WINDOW = 80  # frames per gesture window (DATA.md)
MODALITIES = ("rgb", "depth")  # m0, m1
# Normalization, one place per data set (SPEC.md section 6): RGB uses the ImageNet statistics, as for the other
# image data sets here; depth (a single 8-bit channel) is centred and scaled to roughly unit range. Neither is
# measured on NVGesture (not reachable here); re-measure on the real data before comparing to published numbers.
RGB_MEAN, RGB_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DEPTH_MEAN, DEPTH_STD = (0.5,), (0.25,)
LINE_EXAMPLE = (
    "path:./Video_data/class_01/subject13_r0 depth:sk_depth:138:218 color:sk_color:138:218 "
    "duo_left:duo_left:161:254 label:1"
)
_DIGITS = re.compile(r"[0-9]{1,9}")  # ASCII only: int() would also take "١٢", "1_0" and " 7"


# ------------------------------------------------------------------------------------------ list files


def _number(text: str, what: str) -> int:
    if not _DIGITS.fullmatch(text):
        raise DataFormatError(f"{what} must be a non-negative integer of at most 9 digits, got {text!r}")
    return int(text)


def parse_list_line(line: str) -> dict[str, Any]:
    """One list line -> {"path": str, "label": int (0-based), "sensors": {name: {"file", "start", "end"}}}.

    Pure; any input gives either such a dict or a DataFormatError saying what is wrong (never another error).
    """
    if not isinstance(line, str):
        raise DataFormatError(f"a list line must be text, got {type(line).__name__}")
    tokens = line.split()
    if not tokens:
        raise DataFormatError("empty line")
    path: str | None = None
    label: int | None = None
    sensors: dict[str, dict[str, Any]] = {}
    for token in tokens:
        key, sep, rest = token.partition(":")
        if not sep or not key:
            raise DataFormatError(f"token {token!r} is not <key>:<value>")
        if key in ("path", "label") and (path if key == "path" else label) is not None:
            raise DataFormatError(f"{key!r} appears twice")
        if key == "path":
            path = _check_path(rest)
        elif key == "label":
            label = _number(rest, "label")
            if not 1 <= label <= NUM_CLASSES:
                raise DataFormatError(f"label must be in 1..{NUM_CLASSES}, got {label}")
        else:
            parts = rest.split(":")
            if len(parts) != 3:
                raise DataFormatError(
                    f"token {token!r} is neither path:, label: nor a sensor token <sensor>:<file stem>:<start>:<end>"
                )
            if key in sensors:
                raise DataFormatError(f"sensor {key!r} appears twice")
            stem, start, end = parts[0], _number(parts[1], f"{key} start"), _number(parts[2], f"{key} end")
            if not stem or any(c in stem for c in "/\\\x00") or stem in (".", ".."):
                raise DataFormatError(f"sensor {key!r} has a bad file stem {stem!r}")
            if end <= start:
                raise DataFormatError(f"sensor {key!r} window {start}:{end} is empty (end must exceed start)")
            sensors[key] = {"file": stem, "start": start, "end": end}
    missing = [k for k, v in (("path", path), ("label", label)) if v is None]
    missing += [s for s in SENSORS.values() if s not in sensors]
    if missing:
        raise DataFormatError(f"missing {', '.join(repr(m) for m in missing)}")
    assert path is not None and label is not None  # for the type checker; checked just above
    return {"path": path, "label": label - 1, "sensors": sensors}


def _check_path(value: str) -> str:
    parts = value.split("/")
    # The loader joins this under <root>: an absolute path or ".." would read outside the data set.
    if not value or value.startswith("/") or ".." in parts or "\\" in value or "\x00" in value:
        raise DataFormatError(f"path must be relative inside the data set (like ./Video_data/...), got {value!r}")
    if not [p for p in parts if p not in ("", ".")]:
        raise DataFormatError(f"path {value!r} names no folder")
    return value


def read_list(path: Path) -> list[dict[str, Any]]:
    """Parse a .lst file; a bad line raises DataFormatError naming the file, the line number and the problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataFormatError(f"{path} is not UTF-8 text ({err}); is it an NVGesture list file?") from err
    entries = []
    for lineno, line in enumerate(text.split("\n"), start=1):  # numbered as editors number them
        if not line.strip():
            continue  # blank lines (a trailing newline, an empty last line) carry nothing
        try:
            entries.append(parse_list_line(line))
        except DataFormatError as err:
            raise DataFormatError(f"{path}, line {lineno}: {err}; a line looks like `{LINE_EXAMPLE}`") from err
    if not entries:
        raise DataFormatError(f"{path} holds no entries; restore it from the NVGesture archive")
    return entries


# --------------------------------------------------------------------------------------------- videos


def read_window(avi: Path, start: int, end: int) -> np.ndarray:
    """Frames start..end-1 of ``avi`` as stored, (end - start, H, W, 3) uint8 in OpenCV's BGR order."""
    avi = Path(avi)
    if not avi.is_file():
        raise FileNotFoundError(f"missing video {avi}; the list file names it, so the data set is incomplete")
    cap = cv2.VideoCapture(str(avi))
    try:
        if not cap.isOpened():
            raise DataFormatError(f"OpenCV cannot open {avi}; is it a complete AVI file?")
        if start > 0 and not cap.set(cv2.CAP_PROP_POS_FRAMES, start):
            raise DataFormatError(f"cannot seek to frame {start} in {avi}")
        frames = []
        for _ in range(end - start):
            ok, frame = cap.read()
            if not ok:
                raise DataFormatError(
                    f"{avi} has fewer frames than the window {start}:{end} in its list line "
                    f"(read {len(frames)} of {end - start} from frame {start}); the video is truncated or the "
                    "list does not belong to it"
                )
            frames.append(frame)
    finally:
        cap.release()
    return np.stack(frames)


def decode_item(root: Path, entry: dict[str, Any], size: int) -> tuple[np.ndarray, np.ndarray]:
    """The item's windows, resized: RGB (WINDOW, size, size, 3) and depth (WINDOW, size, size), both uint8."""
    out = []
    for sensor in (SENSORS["rgb"], SENSORS["depth"]):
        s = entry["sensors"][sensor]
        frames = read_window(root / entry["path"] / f"{s['file']}.avi", s["start"], s["end"])
        if len(frames) != WINDOW:  # keep every item the same length (see the module docstring)
            frames = frames[np.linspace(0, len(frames) - 1, WINDOW).round().astype(int)]
        frames = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])
        out.append(np.ascontiguousarray(frames[..., ::-1]) if sensor == SENSORS["rgb"] else frames[..., 0].copy())
    return out[0], out[1]


def frame_indices(n: int, frames: int, train: bool) -> Tensor:
    """Which of the WINDOW frames each of ``n`` items shows: (n, frames) int64.

    Evenly spaced with stride WINDOW // frames; the offset inside one stride is its middle in val/test and
    uniform random in train (torch's global RNG).
    """
    stride = WINDOW // frames
    if train:
        offset = torch.randint(0, stride, (n, 1))
    else:
        offset = torch.full((n, 1), stride // 2)
    return offset + torch.arange(frames) * stride


# --------------------------------------------------------------------------------------------- splits


@dataclass(frozen=True, eq=False)
class NVGestureSplit:
    """Items ``rows`` of one list; frames come from the memory-mapped cache, or are decoded per batch."""

    root: Path
    entries: tuple[dict[str, Any], ...]  # the whole list this split draws from
    rows: np.ndarray  # (N,) indices into ``entries`` (and into the cache arrays)
    frames: int
    size: int
    cache: tuple[np.ndarray, np.ndarray] | None  # (rgb (M, WINDOW, S, S, 3), depth (M, WINDOW, S, S)) or None

    def __post_init__(self) -> None:
        if len(self.rows) == 0:
            raise ValueError("empty split: it holds no items; check the list files and val_fraction")

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def labels(self) -> Tensor:
        return torch.tensor([self.entries[r]["label"] for r in self.rows], dtype=torch.long)

    def raw_frames(self, idx: Tensor, train: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """uint8 RGB (B, T, S, S, 3) and depth (B, T, S, S) of the items ``idx`` (before normalization)."""
        rows = self.rows[np.asarray(idx, dtype=np.int64).reshape(-1)]
        t = frame_indices(len(rows), self.frames, train).numpy()  # (B, T)
        if self.cache is not None:
            # fancy indexing a memmap reads only the pages of the chosen frames
            return self.cache[0][rows[:, None], t], self.cache[1][rows[:, None], t]
        rgb, depth = [], []
        for r, ti in zip(rows, t, strict=True):
            c, d = decode_item(self.root, self.entries[r], self.size)
            rgb.append(c[ti])
            depth.append(d[ti])
        return np.stack(rgb), np.stack(depth)

    def batch(self, idx: Tensor, train: bool = False) -> tuple[dict[str, Tensor], Tensor]:
        rgb, depth = self.raw_frames(idx, train)
        x_rgb = torch.from_numpy(rgb).permute(0, 4, 1, 2, 3).float().div_(255)  # (B, 3, T, S, S)
        x_depth = torch.from_numpy(depth).unsqueeze(1).float().div_(255)  # (B, 1, T, S, S)
        x_rgb = (x_rgb - torch.tensor(RGB_MEAN).view(1, 3, 1, 1, 1)) / torch.tensor(RGB_STD).view(1, 3, 1, 1, 1)
        x_depth = (x_depth - DEPTH_MEAN[0]) / DEPTH_STD[0]
        return {"rgb": x_rgb, "depth": x_depth}, self.labels[torch.as_tensor(idx).reshape(-1)]


# ---------------------------------------------------------------------------------------------- cache


def _fingerprint(root: Path, list_path: Path, entries: list[dict[str, Any]], size: int) -> str:
    """Hash of what the cache depends on: the list file, every video it names (size, mtime) and ``size``."""
    h = hashlib.sha256(json.dumps({"version": CACHE_VERSION, "window": WINDOW, "size": size}).encode())
    for p in [list_path] + [
        root / e["path"] / f"{e['sensors'][s]['file']}.avi" for e in entries for s in SENSORS.values()
    ]:
        try:
            st = p.stat()
            h.update(f"{p.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            h.update(f"{p.relative_to(root)}|missing\n".encode())  # decoding will say which file is missing
    return h.hexdigest()[:16]


def load_cache(root: Path, split: str, entries: list[dict[str, Any]], size: int) -> tuple[np.ndarray, np.ndarray]:
    """The decoded windows of one list, memory-mapped; built (with a progress bar) when missing or stale."""
    from tqdm import tqdm

    folder = root / CACHE_DIR
    key = _fingerprint(root, root / LIST_FILES[split], entries, size)
    paths = {m: folder / f"{split}-{m}-{size}px-{key}.npy" for m in MODALITIES}
    shapes = {"rgb": (len(entries), WINDOW, size, size, 3), "depth": (len(entries), WINDOW, size, size)}
    arrays = {m: _open_if_valid(paths[m], shapes[m]) for m in MODALITIES}
    if all(a is not None for a in arrays.values()):
        return arrays["rgb"], arrays["depth"]
    try:
        folder.mkdir(exist_ok=True)
        tmp = {m: _temp_path(folder, paths[m].name) for m in MODALITIES}
    except OSError as err:
        raise OSError(
            f"cannot write the NVGesture frame cache under {folder} ({err}); make it writable, or pass "
            "cache=False (`--set data.cache=false`) to decode the videos for every batch"
        ) from err
    try:
        out = {m: np.lib.format.open_memmap(tmp[m], mode="w+", dtype=np.uint8, shape=shapes[m]) for m in MODALITIES}
        for i, e in enumerate(tqdm(entries, desc=f"caching NVGesture {split} frames ({size}px)", unit="clip")):
            out["rgb"][i], out["depth"][i] = decode_item(root, e, size)
        for m in MODALITIES:
            out[m].flush()
            del out[m]  # close the memmap before the rename
            os.replace(tmp[m], paths[m])  # atomic: a reader sees the old state or the whole new file
    finally:
        for t in tmp.values():
            Path(t).unlink(missing_ok=True)
    for old in folder.glob(f"{split}-*.npy"):
        if old not in paths.values():
            old.unlink(missing_ok=True)  # a stale fingerprint or another size: drop it, it can be rebuilt
    return tuple(np.load(paths[m], mmap_mode="r") for m in MODALITIES)  # type: ignore[return-value]


def _temp_path(folder: Path, name: str) -> str:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")  # same folder: rename is atomic
    os.close(fd)
    return tmp


def _open_if_valid(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        a = np.load(path, mmap_mode="r")
    except (ValueError, OSError):
        return None  # a damaged file: rebuild it
    return a if a.shape == shape and a.dtype == np.uint8 else None


# --------------------------------------------------------------------------------------------- loader


def _find_root(root: Path) -> Path:
    """``root``, or its nvGesture_v1 subfolder (how the NVIDIA archive unpacks)."""
    if not (root / LIST_FILES["train"]).is_file() and (root / "nvGesture_v1" / LIST_FILES["train"]).is_file():
        return root / "nvGesture_v1"
    return root


def load_nvgesture_dir(
    name: str,
    root: Path,
    val_fraction: float = 0.2,
    data_seed: int = 0,
    frames: int = 8,
    size: int = 112,
    cache: bool = True,
    arch: str = "i3d",
) -> MultiModalData:
    """Load the NVGesture layout under ``root`` (real or stand-in) as train / validation / test splits."""
    if isinstance(frames, bool) or not isinstance(frames, int) or not 1 <= frames <= WINDOW:
        raise ValueError(f"frames must be an integer in 1..{WINDOW} (recommended 8), got {frames!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an integer >= 8 pixels (recommended 112), got {size!r}")
    if not isinstance(cache, bool):
        raise ValueError(f"cache must be true or false, got {cache!r}")
    root = _find_root(Path(root))
    missing = [f for f in LIST_FILES.values() if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"no NVGesture list files under {root} (missing {', '.join(missing)}). NVGesture cannot be "
            f"downloaded here (NVIDIA license): unpack nvGesture_v1 into {root}, or make the synthetic stand-in "
            "with `greedymm data make nvgesture-standin`"
        )
    lists = {split: read_list(root / f) for split, f in LIST_FILES.items()}
    train_labels = torch.tensor([e["label"] for e in lists["train"]])
    keep, held = stratified_split(train_labels, val_fraction, seed=data_seed)
    if len(held) == 0:
        raise ValueError(
            f"val_fraction={val_fraction} holds out no training item of any class ({len(train_labels)} items); "
            "raise val_fraction or use more clips per class"
        )
    store = {s: (load_cache(root, s, lists[s], size) if cache else None) for s in lists}  # after the cheap checks

    def split(which: str, rows: np.ndarray) -> NVGestureSplit:
        return NVGestureSplit(root, tuple(lists[which]), rows, frames, size, store[which])

    standin = root / STANDIN_FILE
    if standin.is_file():
        try:
            info = json.loads(standin.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataFormatError(f"{standin} is not valid JSON ({err}); make the stand-in again") from err
        info = info if isinstance(info, dict) else {}
        source = {
            "real_data": False,
            "source": f"synthetic stand-in at {root}",
            "note": "a synthetic stand-in, not NVGesture: " + str(info.get("note", "")),
        }
    else:
        source = {
            "real_data": True,
            "source": f"NVGesture at {root}",
            "note": f"official train/test lists; validation = {val_fraction:g} of train, stratified, seed {data_seed}",
        }
    labels = [e["label"] for entries in lists.values() for e in entries]
    return MultiModalData(
        name=name,
        modalities=MODALITIES,
        in_channels=(3, 1),
        num_classes=max(labels) + 1,
        arch=arch,
        train=split("train", keep.numpy()),
        val=split("train", held.numpy()),
        test=split("test", np.arange(len(lists["test"]))),
        source=source,
    )


def _loader(name: str):
    def load(
        data_dir: str | Path | None = None,
        val_fraction: float = 0.2,
        data_seed: int = 0,
        frames: int = 8,
        size: int = 112,
        cache: bool = True,
        root: str | Path | None = None,
        arch: str = "i3d",
        **unknown: Any,
    ) -> MultiModalData:
        if unknown:
            raise ValueError(
                f"unknown option(s) for data set {name}: {sorted(unknown)}; valid: data_dir, val_fraction, "
                "data_seed, frames, size, cache, root, arch"
            )
        folder = Path(root) if root is not None else data_root(data_dir) / name
        return load_nvgesture_dir(name, folder, val_fraction, data_seed, frames, size, cache, arch)

    return load


load_nvgesture = register_dataset(
    "nvgesture", "NVGesture RGB + depth clips (nvGesture_v1 unpacked under <data>/nvgesture; NVIDIA license)"
)(_loader("nvgesture"))
load_nvgesture_standin = register_dataset(
    "nvgesture-standin", "synthetic RGB-D gesture clips in NVGesture's layout (`greedymm data make nvgesture-standin`)"
)(_loader("nvgesture-standin"))
