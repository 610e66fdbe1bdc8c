"""Dense optical flow of a clip (Farneback, OpenCV), quantized to int8: the third modality of video data sets.

Two-stream and I3D models feed a flow stream next to RGB (Simonyan & Zisserman 2014; Carreira & Zisserman 2017).
They use TV-L1, which OpenCV keeps in its contrib package; Farneback (``cv2.calcOpticalFlowFarneback``) ships
with opencv-python-headless and is fast enough on the CPU to compute once and cache.

Convention: flow[t] is the forward flow from frame t to frame t+1 (a pixel at x in frame t is at x + flow[t]
in frame t+1), computed on grey frames at the resolution given; the last frame repeats the flow before it, so a
clip of T frames gives T flows and any frame index picked for RGB picks its flow too. Channels are (dx, dy):
dx > 0 is motion to the right, dy > 0 motion down (image rows grow downward).

Storage: int8, in thousandths of the frame side per frame (``FLOW_UNITS`` = 1000 units per side), rounded and
clipped to +-127 (+-12.7 % of the side per frame: +-14 px at 112 px; I3D clips TV-L1 at +-20 px at 256 px, about
+-7.8 %). Units relative to the side keep one motion the same number at every cache size, and so the same
network input after ``normalize``.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from .optional import optional_module

cv2 = optional_module("cv2")  # imported on first use: greedymm[video]

CHANNELS = 2  # (dx, dy)
FLOW_UNITS = 1000  # stored units per frame side (see the module docstring)
FLOW_CLIP = 127  # int8 range, symmetric so that dx and -dx clip alike
# Network input = stored units / FLOW_STD: 10 units (1 % of the side per frame) -> 1.0. A guess of the typical
# hand speed, like the depth statistics in nvgesture.py not measured on NVGesture; flow is centred on 0 by
# symmetry (a gesture and its mirror are both classes), so no mean is subtracted.
FLOW_STD = 10.0
# Farneback settings of OpenCV's tutorial (pyramid halving, 3 levels, 15 px window, 5 px polynomial); changing
# them changes every cached flow, so they are part of the cache key (FLOW_KEY).
FARNEBACK = {
    "pyr_scale": 0.5,
    "levels": 3,
    "winsize": 15,
    "iterations": 3,
    "poly_n": 5,
    "poly_sigma": 1.2,
    "flags": 0,
}
FLOW_KEY = f"v1-u{FLOW_UNITS}-" + "-".join(f"{v:g}" for v in FARNEBACK.values())


def farneback(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """Forward flow between two grey uint8 frames (H, W): float32 (H, W, 2) in pixels, (dx, dy)."""
    return cv2.calcOpticalFlowFarneback(prev, nxt, None, **FARNEBACK)


def quantize(flow_px: np.ndarray, side: int) -> np.ndarray:
    """Flow in pixels of a ``side``-pixel frame -> int8 storage units (see the module docstring)."""
    return np.clip(np.rint(flow_px * (FLOW_UNITS / side)), -FLOW_CLIP, FLOW_CLIP).astype(np.int8)


def to_pixels(stored: np.ndarray, side: int) -> np.ndarray:
    """int8 storage units -> float32 pixels of a ``side``-pixel frame (the inverse of ``quantize``, up to rounding)."""
    return stored.astype(np.float32) * (side / FLOW_UNITS)


def _grey(rgb: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB -> (T, H, W) uint8 grey (ITU-R 601 weights, as cv2.COLOR_RGB2GRAY)."""
    return np.stack([cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in rgb])


def clip_flow(rgb: np.ndarray, at: Iterable[int] | None = None) -> np.ndarray:
    """int8 flow (len(at), H, W, 2) of frames ``at`` (default: all T) of an RGB clip (T, H, W, 3) uint8.

    Only the frame pairs needed are computed, so decoding per batch (no cache) pays for the sampled frames only.
    """
    if rgb.ndim != 4 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"clip_flow needs uint8 RGB frames (T, H, W, 3), got {rgb.dtype} {rgb.shape}")
    n, side = len(rgb), rgb.shape[2]
    if n < 2:
        raise ValueError(f"optical flow needs at least 2 frames, got {n}")
    frames = range(n) if at is None else [int(t) for t in at]
    if any(not 0 <= t < n for t in frames):
        raise IndexError(f"frame indices must be in 0..{n - 1} for a clip of {n} frames, got {list(frames)}")
    pairs = {min(t, n - 2) for t in frames}  # the last frame repeats the flow before it
    needed = sorted(pairs | {p + 1 for p in pairs})
    grey = dict(zip(needed, _grey(rgb[needed]), strict=True))
    flows = {p: quantize(farneback(grey[p], grey[p + 1]), side) for p in pairs}
    return np.stack([flows[min(t, n - 2)] for t in frames])


def clip_flows(clips: Iterable[np.ndarray], workers: int | None = None) -> Iterator[np.ndarray]:
    """``clip_flow`` of each clip, in order, computed on ``workers`` threads (default: the usable CPU cores).

    OpenCV releases the GIL and Farneback itself runs on one core, so threads over clips use all cores.
    """
    workers = workers or _cores()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # a bounded window of jobs ahead, so a long list never holds every clip's flow in memory at once
        pending: deque[Future[np.ndarray]] = deque()
        for clip in clips:
            pending.append(pool.submit(clip_flow, np.asarray(clip)))
            if len(pending) > 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _cores() -> int:
    """CPU cores this process may run on (the affinity mask in a container, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def normalize(stored: np.ndarray | Tensor) -> Tensor:
    """int8 storage (B, T, S, S, 2) -> network input (B, 2, T, S, S) float32, about unit scale (FLOW_STD)."""
    x = torch.as_tensor(np.asarray(stored)) if not isinstance(stored, Tensor) else stored
    return x.permute(0, 4, 1, 2, 3).float().div_(FLOW_STD)
