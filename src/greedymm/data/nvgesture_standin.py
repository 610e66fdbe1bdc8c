"""A synthetic RGB-D gesture stand-in for NVGesture, written in NVGesture's exact layout and list format.

NVGesture itself cannot be fetched here (NVIDIA license, about 41 GB), so this writes
``<root>/Video_data/class_XX/subject<S>_r<R>/{sk_color.avi, sk_depth.avi}`` and the two .lst files, which
``greedymm.data.nvgesture`` then reads like the real thing. Numbers from it are NOT NVGesture numbers.

Each clip (100-120 frames, 30 fps, FFV1 AVI: lossless, so tests can compare exact pixels) shows a blob at rest,
then an 80-frame gesture window at a random start (the list's start:end), then the blob at rest again. A class
is a path (right, left, up, down, circle clockwise / anti-clockwise, two blobs orbiting), a depth motion
(toward / away from the camera) and a look (solid / rotating stripes). The modalities carry different
information on purpose:
- toward vs away changes only the depth video (the RGB blob keeps its size and colour),
- solid vs striped changes only the RGB video (depth sees a flat disc either way),
- the path shows in both.
The first classes are chosen so that even 3 classes hold a depth-only pair (0, 1) and an RGB-only pair (0, 2).
Depth is written as a 3-channel grey video, as NVGesture's sk_depth is. The list lines carry a duo_left token
like the real ones, but no duo_left.avi is written (the loader never reads it).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .nvgesture import LIST_FILES, NUM_CLASSES, STANDIN_FILE, VIDEO_DIR, WINDOW
from .optional import optional_module

cv2 = optional_module("cv2")  # imported on first use: greedymm[video]

FPS = 30
CLIP_FRAMES = (100, 120)  # inclusive range of clip lengths
PATHS = ("right", "left", "up", "down", "circle_cw", "circle_ccw", "orbit")
_SPLIT_CODE = {"train": 0, "test": 1}


@dataclass(frozen=True)
class GestureClass:
    path: str  # one of PATHS
    toward: bool  # depth: the blob comes toward the camera (else moves away)
    striped: bool  # RGB: rotating stripes (else a solid colour)

    def describe(self) -> str:
        look = "striped (rotating)" if self.striped else "solid"
        return f"{self.path}, {'toward' if self.toward else 'away from'} the camera, {look}"


def class_table(classes: int) -> tuple[GestureClass, ...]:
    """The first ``classes`` gesture classes; 0/1 differ in depth only, 0/2 in RGB only."""
    first = [
        GestureClass("right", True, False),
        GestureClass("right", False, False),
        GestureClass("right", True, True),
        GestureClass("up", True, False),
        GestureClass("up", False, True),
        GestureClass("orbit", True, False),
    ]
    rest = [GestureClass(p, t, s) for p in PATHS for t in (True, False) for s in (False, True)]
    table = first + [c for c in rest if c not in first]
    return tuple(table[:classes])


@dataclass(frozen=True)
class ClipSpec:
    """Everything that fixes one clip's pixels (drawn from the seed by ``clip_specs``)."""

    split: str
    label: int  # 0-based
    subject: int
    repetition: int
    length: int
    start: int  # the gesture window is start .. start + WINDOW
    size: tuple[int, int]  # (width, height)
    gesture: GestureClass
    center: tuple[float, float]
    amplitude: float  # pixels travelled along the path
    radius: float
    phase: float
    color: tuple[float, float, float]  # RGB of the blob
    stripe_period: float
    stripe_angle: float
    depth_rest: float  # grey level of the far position; nearer is brighter
    depth_range: float
    background: tuple[tuple[float, float, float], tuple[float, float, float]]  # RGB at the left and right edge
    floor: tuple[float, float]  # depth background at the top and bottom rows

    @property
    def rel_path(self) -> str:
        return f"./{VIDEO_DIR}/class_{self.label + 1:02d}/subject{self.subject}_r{self.repetition}"

    def list_line(self) -> str:
        s, e = self.start, self.start + WINDOW
        # duo_left in the real lists has its own window; the file itself is not written (see module docstring)
        return (
            f"path:{self.rel_path} depth:sk_depth:{s}:{e} color:sk_color:{s}:{e} "
            f"duo_left:duo_left:{s + 20}:{e + 30} label:{self.label + 1}"
        )


def clip_specs(
    classes: int, train_per_class: int, test_per_class: int, size: tuple[int, int], seed: int
) -> dict[str, list[ClipSpec]]:
    """The clips of both splits, deterministic for ``seed``; test subjects differ from training subjects."""
    table = class_table(classes)
    w, h = size
    scale = min(w, h)
    per = {"train": train_per_class, "test": test_per_class}
    first_subject = {"train": 1, "test": 1 + math.ceil(train_per_class / 3)}
    out: dict[str, list[ClipSpec]] = {"train": [], "test": []}
    for split, n in per.items():
        for label, gesture in enumerate(table):
            for j in range(n):
                rng = np.random.default_rng([seed, _SPLIT_CODE[split], label, j])
                length = int(rng.integers(CLIP_FRAMES[0], CLIP_FRAMES[1] + 1))
                radius = float(rng.uniform(0.08, 0.11) * scale)
                out[split].append(
                    ClipSpec(
                        split=split,
                        label=label,
                        subject=first_subject[split] + j // 3,
                        repetition=j % 3,
                        length=length,
                        start=int(rng.integers(0, length - WINDOW + 1)),
                        size=(w, h),
                        gesture=gesture,
                        center=(
                            float(w / 2 + rng.uniform(-0.08, 0.08) * scale),
                            float(h / 2 + rng.uniform(-0.08, 0.08) * scale),
                        ),
                        amplitude=float(rng.uniform(0.4, 0.5) * scale),
                        radius=radius,
                        phase=float(rng.uniform(0, 2 * math.pi)),
                        color=tuple(float(v) for v in rng.uniform((170, 110, 80), (230, 170, 140))),
                        stripe_period=max(2.0, 0.8 * radius),
                        stripe_angle=float(rng.uniform(0, math.pi)),
                        depth_rest=float(rng.uniform(70, 90)),
                        depth_range=float(rng.uniform(110, 130)),
                        background=(
                            tuple(float(v) for v in rng.uniform(20, 110, 3)),
                            tuple(float(v) for v in rng.uniform(20, 110, 3)),
                        ),
                        floor=(float(rng.uniform(15, 25)), float(rng.uniform(45, 60))),
                    )
                )
    return out


def _centers(spec: ClipSpec, p: float) -> list[tuple[float, float]]:
    """Blob centres at gesture progress p in [0, 1]."""
    cx, cy = spec.center
    a, path = spec.amplitude, spec.gesture.path
    if path in ("right", "left"):
        sign = 1 if path == "right" else -1
        return [(cx + sign * a * (p - 0.5), cy)]
    if path in ("up", "down"):
        sign = -1 if path == "up" else 1  # image rows grow downward
        return [(cx, cy + sign * a * (p - 0.5))]
    if path in ("circle_cw", "circle_ccw"):
        # with rows growing downward, an increasing angle turns clockwise on screen
        ang = spec.phase + (2 if path == "circle_cw" else -2) * math.pi * p
        return [(cx + a / 2 * math.cos(ang), cy + a / 2 * math.sin(ang))]
    ang = spec.phase + math.pi * p  # orbit: two blobs on opposite sides, half a turn
    r = a / 3
    return [(cx + r * math.cos(ang), cy + r * math.sin(ang)), (cx - r * math.cos(ang), cy - r * math.sin(ang))]


def render_clip(spec: ClipSpec) -> tuple[np.ndarray, np.ndarray]:
    """The clip's frames: RGB (L, H, W, 3) and depth (L, H, W), uint8."""
    w, h = spec.size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (xx / max(w - 1, 1))[..., None]
    bg = np.asarray(spec.background[0], np.float32) * (1 - t) + np.asarray(spec.background[1], np.float32) * t
    floor = spec.floor[0] + (spec.floor[1] - spec.floor[0]) * yy / max(h - 1, 1)
    bg8, floor8 = _to_uint8(bg), _to_uint8(floor)
    color = np.asarray(spec.color, np.float32)
    radius = spec.radius * (0.7 if spec.gesture.path == "orbit" else 1.0)
    rgb = np.broadcast_to(bg8, (spec.length, *bg8.shape)).copy()  # (L, H, W, 3)
    depth = np.broadcast_to(floor8, (spec.length, *floor8.shape)).copy()  # (L, H, W)
    for f in range(spec.length):
        q = min(max((f - spec.start) / (WINDOW - 1), 0.0), 1.0)
        p = q * q * (3 - 2 * q)  # smoothstep: the hand accelerates and stops, no jump at the window edges
        near = _to_uint8(np.float32(spec.depth_rest + spec.depth_range * (p if spec.gesture.toward else 1 - p)))
        for cx, cy in _centers(spec, p):
            # only the blob's bounding box changes; the rest of the frame is the background
            y0, y1 = max(int(cy - radius) - 1, 0), min(int(cy + radius) + 2, h)
            x0, x1 = max(int(cx - radius) - 1, 0), min(int(cx + radius) + 2, w)
            if y0 >= y1 or x0 >= x1:
                continue
            bx, by = xx[y0:y1, x0:x1], yy[y0:y1, x0:x1]
            mask = (bx - cx) ** 2 + (by - cy) ** 2 <= radius**2
            if spec.gesture.striped:
                ang = spec.stripe_angle + math.pi * p  # the stripes turn with the gesture
                u = (bx - cx) * math.cos(ang) + (by - cy) * math.sin(ang)
                shade = np.where(np.sin(2 * math.pi * u / spec.stripe_period) > 0, 1.0, 0.45)[..., None]
                patch = _to_uint8(color * shade)
            else:
                patch = np.broadcast_to(_to_uint8(color), (y1 - y0, x1 - x0, 3))
            rgb[f, y0:y1, x0:x1][mask] = patch[mask]
            depth[f, y0:y1, x0:x1][mask] = near
    return rgb, depth


def _to_uint8(a: np.ndarray) -> np.ndarray:
    return np.clip(a, 0, 255).round().astype(np.uint8)


def write_video(path: Path, frames: np.ndarray) -> None:
    """Write (L, H, W, 3) BGR uint8 frames as an FFV1 AVI at 30 fps (lossless with this OpenCV)."""
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), FPS, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write an FFV1 AVI at {path}; is opencv-python-headless installed?")
    try:
        for frame in frames:
            writer.write(np.ascontiguousarray(frame))
    finally:
        writer.release()


def make_nvgesture_standin(
    root: Path,
    classes: int = 6,
    train_per_class: int = 8,
    test_per_class: int = 4,
    size: tuple[int, int] = (320, 240),
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Write the stand-in into ``root`` (replacing an earlier stand-in there) and return ``root``.

    ``size`` is (width, height) of the videos (NVGesture: 320 x 240). Everything is written into a staging
    folder next to ``root`` and moved into place at the end, so an interrupted run leaves no half data set.
    """
    from tqdm import tqdm

    if not 2 <= classes <= NUM_CLASSES:
        raise ValueError(f"classes must be in 2..{NUM_CLASSES} (NVGesture has {NUM_CLASSES}), got {classes}")
    if train_per_class < 1 or test_per_class < 1:
        raise ValueError("train_per_class and test_per_class must be >= 1")
    w, h = (int(v) for v in size)
    if w < 8 or h < 8:
        raise ValueError(f"size must be at least 8 x 8 pixels, got {size}")
    root = Path(root)
    if root.exists() and any(root.iterdir()) and not (root / STANDIN_FILE).is_file():
        raise FileExistsError(f"{root} exists and is not a stand-in (no {STANDIN_FILE}); choose an empty folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    specs = clip_specs(classes, train_per_class, test_per_class, (w, h), seed)
    stage = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".staging", dir=root.parent))
    try:
        clips = [c for split in ("train", "test") for c in specs[split]]
        for spec in tqdm(clips, desc="writing NVGesture stand-in", unit="clip", disable=not progress):
            folder = stage / spec.rel_path
            folder.mkdir(parents=True)
            rgb, depth = render_clip(spec)
            write_video(folder / "sk_color.avi", rgb[..., ::-1])  # OpenCV writes BGR
            write_video(folder / "sk_depth.avi", np.broadcast_to(depth[..., None], (*depth.shape, 3)))
        for split, fname in LIST_FILES.items():
            (stage / fname).write_text("".join(c.list_line() + "\n" for c in specs[split]))
        info = {
            "real_data": False,
            "generator": "greedymm.data.nvgesture_standin.make_nvgesture_standin",
            "options": {
                "classes": classes,
                "train_per_class": train_per_class,
                "test_per_class": test_per_class,
                "size": [w, h],
                "seed": seed,
            },
            "classes": [c.describe() for c in class_table(classes)],
            "class_design": [asdict(c) for c in class_table(classes)],
            "note": (
                "synthetic RGB-D gesture clips in NVGesture's layout and list format; toward/away shows in depth "
                "only, solid/striped in RGB only; duo_left tokens name files that are not written"
            ),
        }
        (stage / STANDIN_FILE).write_text(json.dumps(info, indent=2) + "\n")
        if root.exists():
            shutil.rmtree(root)  # an earlier stand-in (checked above), or an empty folder
        os.replace(stage, root)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return root
