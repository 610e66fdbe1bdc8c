"""Optical flow (greedymm.data.flow): direction and size of a known motion, the frame convention, quantization."""

import numpy as np
import pytest
import torch

from greedymm.data import flow as of


def corner(size: int, step: tuple[int, int], side: int, t: int) -> tuple[int, int]:
    """Top-left (x, y) of the square in frame t: it starts 4 px inside the edge it moves away from."""
    return tuple(4 + s * t if s >= 0 else size - side - 4 + s * t for s in step)  # type: ignore[return-value]


def moving_square(size: int, frames: int, step: tuple[int, int], side: int = 10) -> np.ndarray:
    """(frames, size, size, 3) uint8 RGB: a bright square on a dark background, moved by ``step`` (dx, dy) px
    per frame."""
    rgb = np.full((frames, size, size, 3), 20, np.uint8)
    for t in range(frames):
        x, y = corner(size, step, side, t)
        rgb[t, y : y + side, x : x + side] = (230, 200, 210)
    return rgb


@pytest.mark.parametrize(("size", "step"), [(48, (1, 0)), (48, (2, 0)), (64, (3, 0)), (48, (0, 2)), (48, (-2, 1))])
def test_a_moving_square_gives_its_motion_in_pixels(size, step):
    side = 10
    rgb = moving_square(size, 5, step, side)
    flow = of.to_pixels(of.clip_flow(rgb), size)  # (T, S, S, 2)
    assert flow.shape == (5, size, size, 2)
    for t in range(4):
        x, y = corner(size, step, side, t)
        square = flow[t, y : y + side, x : x + side]  # the square's pixels in frame t
        assert square[..., 0].mean() == pytest.approx(step[0], abs=0.15)  # dx > 0: to the right
        assert square[..., 1].mean() == pytest.approx(step[1], abs=0.15)  # dy > 0: down
        # Farneback (15 px window, 3 pyramid levels) blurs the motion about 11 px past the edges; beyond, stillness
        near = np.zeros((size, size), bool)
        for u in (t, t + 1):
            x, y = corner(size, step, side, u)
            near[max(y - 12, 0) : y + side + 12, max(x - 12, 0) : x + side + 12] = True
        assert near.mean() < 0.9 and np.abs(flow[t][~near]).max() < 0.2


def test_t_frames_give_t_flows_the_last_repeated_and_any_subset_matches():
    rgb = moving_square(32, 6, (1, 0))
    full = of.clip_flow(rgb)
    assert len(full) == 6 and np.array_equal(full[-1], full[-2])
    at = [5, 0, 3, 3]
    assert np.array_equal(of.clip_flow(rgb, at), full[at])  # per-batch decoding computes only these pairs


def test_quantization_units_clip_and_round_trip():
    side = 64
    px = np.array([0.0, 0.5, -0.5, 3.2, 1000.0, -1000.0], np.float32)
    q = of.quantize(px, side)
    assert q.dtype == np.int8
    assert q.tolist() == [0, 8, -8, 50, of.FLOW_CLIP, -of.FLOW_CLIP]  # 1000 units per side; rounded; clipped
    back = of.to_pixels(q[:4], side)
    assert np.abs(back - px[:4]).max() <= 0.5 * side / of.FLOW_UNITS + 1e-6
    # the same motion, relative to the frame, is the same number at every size
    assert of.quantize(np.float32(2.0), 64) == of.quantize(np.float32(4.0), 128)


def test_threaded_flows_equal_one_by_one_in_order():
    clips = [moving_square(24, 4, (d, 0), side=6) for d in (0, 1, 2)] * 3
    got = list(of.clip_flows(iter(clips), workers=2))
    assert len(got) == len(clips)
    assert all(np.array_equal(g, of.clip_flow(c)) for g, c in zip(got, clips, strict=True))


def test_normalize_layout_and_scale():
    q = np.arange(2 * 3 * 4 * 4 * 2, dtype=np.int64).reshape(2, 3, 4, 4, 2).clip(-127, 127).astype(np.int8)
    x = of.normalize(q)
    assert x.shape == (2, 2, 3, 4, 4) and x.dtype == torch.float32  # (B, 2, T, S, S)
    assert x[1, 0, 2, 3, 1].item() == pytest.approx(float(q[1, 2, 3, 1, 0]) / of.FLOW_STD)


def test_bad_clips_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="at least 2 frames"):
        of.clip_flow(np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8 RGB"):
        of.clip_flow(np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(IndexError, match="0..2"):
        of.clip_flow(np.zeros((3, 8, 8, 3), np.uint8), [3])
