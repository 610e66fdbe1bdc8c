"""NVGesture (NVIDIA Dynamic Hand Gesture, Molchanov et al. CVPR 2016), RGB (m0) + depth (m1) [+ flow]; docs/DATA.md.

Layout read here, exactly as NVIDIA ships it (and as ``nvgesture_standin`` writes its synthetic stand-in)::

    <root>/nvgesture_train_correct_cvpr2016_v2.lst   (1,050 lines)  and  ..._test_... (482 lines)
        (also read under their second name, nvgesture_{train,test}_correct_v2.lst, when these are absent)
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

Optical flow, the third modality of the field's RGB + depth + flow models, is asked for with
``modalities=("rgb", "depth", "flow")`` (any subset, in any order; "color", the list's sensor name, means
"rgb"). It is computed from the decoded RGB window at the cache resolution (``flow.py``: Farneback, forward
flow of frame t to t+1, the last frame repeating the flow before it, int8 in thousandths of the frame side) and
cached once per split next to the frames; the default, rgb + depth, never computes it. All modalities of an item
show the same frame indices, so flow[t] is the motion at the RGB frame t the model sees.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import flow as of
from .base import MultiModalData, register_dataset, stratified_split
from .fetch import data_root
from .idx import DataFormatError
from .nvgesture_format import (  # noqa: F401  (also re-exported: the stand-in and tests import them from here)
    LIST_FILES,
    LIST_FILES_V2,
    NUM_CLASSES,
    SENSORS,
    VIDEO_DIR,
    WINDOW,
    find_list_file,
    parse_list_line,
    read_list,
    read_window,
)
from .optional import optional_module

cv2 = optional_module("cv2")  # imported on first use: greedymm[video]

STANDIN_FILE = "STANDIN.json"  # written by the stand-in generator; its presence means "not the real data"
CACHE_DIR = ".greedymm_cache"
CACHE_VERSION = 1  # bump when the cache layout or the decoding changes
MODALITIES = ("rgb", "depth")  # m0, m1: the default
CHANNELS = {"rgb": 3, "depth": 1, "flow": of.CHANNELS}  # every modality this loader can give, in channels
ALIASES = {"color": "rgb"}  # the list files' sensor name for RGB
# Normalization, one place per data set (docs/PAPER.md section 6): RGB uses the ImageNet statistics, as for the other
# image data sets here; depth (a single 8-bit channel) is centred and scaled to roughly unit range. Neither is
# measured on NVGesture (not reachable here); re-measure on the real data before comparing to published numbers.
RGB_MEAN, RGB_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DEPTH_MEAN, DEPTH_STD = (0.5,), (0.25,)


# --------------------------------------------------------------------------------------------- items


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


def parse_modalities(value: Any) -> tuple[str, ...]:
    """``modalities`` as given (names, or one comma-separated string) -> a tuple of known names, aliases resolved."""
    example = "e.g. `--set data.modalities=rgb,depth,flow`"
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"modalities must be a list of names or a comma-separated string, got {value!r}; {example}")
    out = tuple(ALIASES.get(n.strip(), n.strip()) for n in names)
    unknown = [n for n in out if n not in CHANNELS]
    if unknown or not out or len(set(out)) != len(out):
        problem = f"unknown modality {unknown}" if unknown else "a modality twice" if out else "no modality"
        raise ValueError(
            f"modalities={value!r} names {problem}; choose one or more, each once, of {sorted(CHANNELS)} "
            f"('color' also means 'rgb'); {example}"
        )
    return out


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
    cache: dict[str, np.ndarray] | None  # rgb (M, WINDOW, S, S, 3), depth (M, WINDOW, S, S) [, flow (..., 2)]
    modalities: tuple[str, ...] = MODALITIES  # what ``batch`` gives, in this order

    def __post_init__(self) -> None:
        if len(self.rows) == 0:
            raise ValueError("empty split: it holds no items; check the list files and val_fraction")

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def labels(self) -> Tensor:
        return torch.tensor([self.entries[r]["label"] for r in self.rows], dtype=torch.long)

    def raw_frames(self, idx: Tensor, train: bool = False) -> dict[str, np.ndarray]:
        """Stored frames of the items ``idx`` (before normalization), one frame index draw for all modalities.

        uint8 rgb (B, T, S, S, 3) and depth (B, T, S, S); int8 flow (B, T, S, S, 2) in ``flow.py``'s units.
        """
        rows = self.rows[np.asarray(idx, dtype=np.int64).reshape(-1)]
        t = frame_indices(len(rows), self.frames, train).numpy()  # (B, T)
        if self.cache is not None:
            # fancy indexing a memmap reads only the pages of the chosen frames
            return {m: self.cache[m][rows[:, None], t] for m in self.modalities}
        out: dict[str, list[np.ndarray]] = {m: [] for m in self.modalities}
        for r, ti in zip(rows, t, strict=True):
            rgb, depth = decode_item(self.root, self.entries[r], self.size)
            for m in self.modalities:  # flow only when asked (it costs more than decoding), at the frames ti only
                out[m].append(rgb[ti] if m == "rgb" else depth[ti] if m == "depth" else of.clip_flow(rgb, ti))
        return {m: np.stack(v) for m, v in out.items()}

    def batch(self, idx: Tensor, train: bool = False) -> tuple[dict[str, Tensor], Tensor]:
        raw = self.raw_frames(idx, train)
        return {m: _to_input(m, raw[m]) for m in self.modalities}, self.labels[torch.as_tensor(idx).reshape(-1)]


def _to_input(modality: str, a: np.ndarray) -> Tensor:
    """Stored frames -> normalized network input (B, C, T, S, S) float32 (the statistics at the top of the file)."""
    if modality == "flow":
        return of.normalize(a)  # (B, 2, T, S, S)
    if modality == "depth":
        return (torch.from_numpy(a).unsqueeze(1).float().div_(255) - DEPTH_MEAN[0]) / DEPTH_STD[0]  # (B, 1, T, S, S)
    x = torch.from_numpy(a).permute(0, 4, 1, 2, 3).float().div_(255)  # (B, 3, T, S, S)
    return (x - torch.tensor(RGB_MEAN).view(1, 3, 1, 1, 1)) / torch.tensor(RGB_STD).view(1, 3, 1, 1, 1)


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


def load_cache(
    root: Path, split: str, entries: list[dict[str, Any]], size: int, flow: bool = False
) -> dict[str, np.ndarray]:
    """The decoded windows of one list, memory-mapped, keyed rgb, depth (and flow when ``flow``).

    Each is built (with a progress bar) when missing or stale; flow is computed from the cached RGB frames.
    """
    folder = root / CACHE_DIR
    key = _fingerprint(root, find_list_file(root, split), entries, size)
    arrays = _frame_cache(root, folder, split, entries, size, key)
    if flow:
        arrays["flow"] = _flow_cache(folder, split, size, key, arrays["rgb"])
    return arrays


def _frame_cache(
    root: Path, folder: Path, split: str, entries: list[dict[str, Any]], size: int, key: str
) -> dict[str, np.ndarray]:
    from tqdm import tqdm

    paths = {m: folder / f"{split}-{m}-{size}px-{key}.npy" for m in MODALITIES}
    shapes = {"rgb": (len(entries), WINDOW, size, size, 3), "depth": (len(entries), WINDOW, size, size)}
    arrays = {m: _open_if_valid(paths[m], shapes[m], np.uint8) for m in MODALITIES}
    if all(a is not None for a in arrays.values()):
        return arrays  # type: ignore[return-value]
    tmp = dict(zip(MODALITIES, _temp_paths(folder, [paths[m].name for m in MODALITIES]), strict=True))
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
        if f"-{key}" not in old.name:  # the key covers the size; a flow cache of this key stays valid
            old.unlink(missing_ok=True)  # a stale fingerprint or another size: drop it, it can be rebuilt
    return {m: np.load(paths[m], mmap_mode="r") for m in MODALITIES}


def _flow_cache(folder: Path, split: str, size: int, key: str, rgb: np.ndarray) -> np.ndarray:
    """int8 flow (M, WINDOW, S, S, 2) of the cached RGB windows ``rgb``; computed once, then memory-mapped."""
    from tqdm import tqdm

    flow_key = hashlib.sha256(of.FLOW_KEY.encode()).hexdigest()[:8]  # new Farneback settings: a new file
    path = folder / f"{split}-flow-{size}px-{key}-{flow_key}.npy"
    shape = (*rgb.shape[:-1], of.CHANNELS)
    cached = _open_if_valid(path, shape, np.int8)
    if cached is not None:
        return cached
    (tmp,) = _temp_paths(folder, [path.name])
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int8, shape=shape)
        flows = of.clip_flows(rgb[i] for i in range(len(rgb)))
        desc = f"computing NVGesture {split} optical flow ({size}px)"
        for i, f in enumerate(tqdm(flows, total=len(rgb), desc=desc, unit="clip")):
            out[i] = f
        out.flush()
        del out  # close the memmap before the rename
        os.replace(tmp, path)  # atomic, as for the frames
    finally:
        Path(tmp).unlink(missing_ok=True)
    for old in folder.glob(f"{split}-flow-*.npy"):
        if old != path:
            old.unlink(missing_ok=True)  # other Farneback settings, sources or sizes: stale
    return np.load(path, mmap_mode="r")


def _temp_paths(folder: Path, names: list[str]) -> list[str]:
    """Empty temporary files in ``folder`` (the cache's own: a rename there is atomic), one per name."""
    try:
        folder.mkdir(exist_ok=True)
        out = []
        for name in names:
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
            os.close(fd)
            out.append(tmp)
        return out
    except OSError as err:
        raise OSError(
            f"cannot write the NVGesture frame cache under {folder} ({err}); make it writable, or pass "
            "cache=False (`--set data.cache=false`) to decode the videos for every batch"
        ) from err


def _open_if_valid(path: Path, shape: tuple[int, ...], dtype: type) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        a = np.load(path, mmap_mode="r")
    except (ValueError, OSError):
        return None  # a damaged file: rebuild it
    return a if a.shape == shape and a.dtype == dtype else None


# --------------------------------------------------------------------------------------------- loader


def _find_root(root: Path) -> Path:
    """``root``, or its nvGesture_v1 subfolder (how the NVIDIA archive unpacks)."""
    if find_list_file(root, "train") is None and find_list_file(root / "nvGesture_v1", "train") is not None:
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
    modalities: Any = MODALITIES,
) -> MultiModalData:
    """Load the NVGesture layout under ``root`` (real or stand-in) as train / validation / test splits.

    ``modalities``: names from CHANNELS (or one comma-separated string), in the order the branches read them.
    """
    modalities = parse_modalities(modalities)
    if isinstance(frames, bool) or not isinstance(frames, int) or not 1 <= frames <= WINDOW:
        raise ValueError(f"frames must be an integer in 1..{WINDOW} (recommended 8), got {frames!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an integer >= 8 pixels (recommended 112), got {size!r}")
    if not isinstance(cache, bool):
        raise ValueError(f"cache must be true or false, got {cache!r}")
    root = _find_root(Path(root))
    missing = [f"{f} (or {LIST_FILES_V2[s]})" for s, f in LIST_FILES.items() if find_list_file(root, s) is None]
    if missing:
        raise FileNotFoundError(
            f"no NVGesture list files under {root} (missing {', '.join(missing)}). NVGesture cannot be "
            f"downloaded here (NVIDIA license): unpack nvGesture_v1 into {root}, or make the synthetic stand-in "
            "with `greedymm data make nvgesture-standin`"
        )
    lists = {split: read_list(find_list_file(root, split)) for split in LIST_FILES}
    train_labels = torch.tensor([e["label"] for e in lists["train"]])
    keep, held = stratified_split(train_labels, val_fraction, seed=data_seed)
    if len(held) == 0:
        raise ValueError(
            f"val_fraction={val_fraction} holds out no training item of any class ({len(train_labels)} items); "
            "raise val_fraction or use more clips per class"
        )
    flow = "flow" in modalities
    store = {s: (load_cache(root, s, lists[s], size, flow) if cache else None) for s in lists}  # after cheap checks

    def split(which: str, rows: np.ndarray) -> NVGestureSplit:
        return NVGestureSplit(root, tuple(lists[which]), rows, frames, size, store[which], modalities)

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
        modalities=modalities,
        in_channels=tuple(CHANNELS[m] for m in modalities),
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
        modalities: Any = MODALITIES,
        **unknown: Any,
    ) -> MultiModalData:
        if unknown:
            raise ValueError(
                f"unknown option(s) for data set {name}: {sorted(unknown)}; valid: data_dir, val_fraction, "
                "data_seed, frames, size, cache, root, arch, modalities"
            )
        folder = Path(root) if root is not None else data_root(data_dir) / name
        return load_nvgesture_dir(name, folder, val_fraction, data_seed, frames, size, cache, arch, modalities)

    return load


load_nvgesture = register_dataset(
    "nvgesture",
    "NVGesture RGB + depth (+ optical flow) clips (nvGesture_v1 unpacked under <data>/nvgesture; NVIDIA license)",
)(_loader("nvgesture"))
load_nvgesture_standin = register_dataset(
    "nvgesture-standin", "synthetic RGB-D gesture clips in NVGesture's layout (`greedymm data make nvgesture-standin`)"
)(_loader("nvgesture-standin"))
