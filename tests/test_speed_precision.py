"""Speed sums without layout copies (same bits as before for contiguous tensors), float64 accumulators that dtype
casts cannot touch, and the logged loss in the model's precision."""

import pytest
import torch

from greedymm import Balancer
from greedymm.metrics.speed import ROW, SpeedTracker, memory_flat, sum_sq
from greedymm.models import build_model
from greedymm.precision import to_channels_last


def reshape_sum_sq(tensors):
    """The speed sums as computed before: each tensor flattened in logical order (a copy for channels-last)."""
    rows, tails = [], []
    for t in tensors:
        flat = t.detach().reshape(-1)
        k = flat.numel() // ROW * ROW
        if k:
            rows.append(torch.linalg.vector_norm(flat[:k].view(-1, ROW), dim=1))
        if k < flat.numel():
            tails.append(flat[k:])
    total = torch.cat(rows).double().square().sum() if rows else None
    if tails:
        tail = torch.cat(tails).double().square().sum()
        total = tail if total is None else total + tail
    return total


def _tiny_pair(arch="small-cnn", fusion="mmtm", width=0.5):
    torch.manual_seed(0)
    a = build_model(arch, ("colored", "gray"), (3, 1), 4, width=width, fusion=fusion)
    b = build_model(arch, ("colored", "gray"), (3, 1), 4, width=width, fusion=fusion)
    b.load_state_dict(a.state_dict())
    return a, b


def _grads(model, x, y):
    model.zero_grad()
    model.loss(model(x), y).backward()


def test_memory_flat_is_a_view_in_every_dense_layout():
    x = torch.randn(8, 6, 5, 5)
    for t in (x, x.contiguous(memory_format=torch.channels_last), x.transpose(0, 1),
              torch.randn(2, 3, 4, 5, 6).contiguous(memory_format=torch.channels_last_3d),
              torch.randn(8, 6, 1, 1).contiguous(memory_format=torch.channels_last)):  # fmt: skip
        flat = memory_flat(t)
        assert flat.data_ptr() == t.data_ptr() and flat.numel() == t.numel()
        assert torch.equal(flat.sort().values, t.reshape(-1).sort().values)
    gappy = x[:, :3]  # a slice with gaps: the one case that copies
    assert torch.equal(memory_flat(gappy), gappy.reshape(-1))


def test_speed_sums_contiguous_bits_unchanged_and_channels_last_agrees():
    torch.manual_seed(1)
    ts = [torch.randn(64, 3, 7, 7), torch.randn(128, 64, 3, 3), torch.randn(256, 128, 3, 3), torch.randn(40, 512),
          torch.randn(10), torch.randn(64, 64, 1, 1)]  # fmt: skip
    before = reshape_sum_sq(ts)
    assert sum_sq(ts).item() == before.item()  # contiguous: the same rows, the same bits
    cl = [t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t for t in ts]
    assert reshape_sum_sq(cl).item() == before.item()
    got = sum_sq(cl).item()
    # rows of another element order: float32 row norms differ in their last bits, nothing more
    assert abs(got - before.item()) <= 1e-7 * before.item()
    # where both layouts store the same order (1x1 kernels, 1-D and 2-D tensors) the bits are the same
    same = [ts[3], ts[4], cl[5]]
    assert sum_sq(same).item() == reshape_sum_sq(same).item()
    # bf16 tensors are normed in float32, close to the float32 sums of the same values
    low = [t.bfloat16() for t in ts]
    ref = reshape_sum_sq([t.float() for t in low]).item()
    assert abs(sum_sq(low).item() - ref) <= 1e-6 * ref


def test_speed_tracker_channels_last_matches_contiguous():
    a, b = _tiny_pair()
    to_channels_last(b)
    x = {"colored": torch.rand(8, 3, 28, 28), "gray": torch.rand(8, 1, 28, 28)}
    y = torch.randint(0, 4, (8,))
    _grads(a, x, y)
    _grads(b, {k: v.contiguous(memory_format=torch.channels_last) for k, v in x.items()}, y)
    ga, gb = a.speed_groups(), b.speed_groups()
    assert any(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for g in gb for p in g)
    ta, tb = SpeedTracker(len(ga)), SpeedTracker(len(gb))
    ta.update(ga)
    tb.update(gb)
    # the contiguous tracker reproduces the old reshape sums bit for bit
    old = torch.stack([reshape_sum_sq([p.grad for p in g]) / reshape_sum_sq(g) for g in ga])
    assert torch.equal(ta.sums, old)
    # channels-last: same tensors, another memory order; gradients themselves differ in float32 last bits
    assert torch.allclose(tb.sums, ta.sums, rtol=1e-5, atol=0)
    # and with identical values in both layouts the speed sums agree to float32-row rounding
    tc = SpeedTracker(len(ga))
    for g, h in zip(ga, gb, strict=True):
        for p, q in zip(g, h, strict=True):
            q.data.copy_(p.data)
            q.grad.copy_(p.grad)
    tc.update(gb)
    assert torch.allclose(tc.sums, ta.sums, rtol=1e-7, atol=0)


def _float64_buffers(model):
    return {k: v.clone() for k, v in model.named_buffers() if v.dtype == torch.float64}


@pytest.mark.parametrize("fusion", ["mmtm", "concat"])
@pytest.mark.parametrize(
    "cast",
    [
        lambda m: m.float(),
        lambda m: m.half(),
        lambda m: m.bfloat16(),
        lambda m: m.to(torch.bfloat16),
        lambda m: m.to("cpu", torch.float16),
        lambda m: m.to(device="cpu", dtype=torch.float32),
    ],
    ids=["float", "half", "bfloat16", "to-bf16", "to-device-fp16", "to-device-fp32"],
)
def test_float64_accumulators_survive_dtype_casts(fusion, cast):
    model, _ = _tiny_pair(fusion=fusion)
    bufs = _float64_buffers(model)
    assert bufs, "the network owns float64 accumulators"
    for name, v in bufs.items():  # values float32 cannot hold
        v.copy_(torch.arange(v.numel(), dtype=torch.float64).view_as(v) / 3 + 1e-12)
        model.get_buffer(name).copy_(v)
    model.double()  # a cast towards float64 and back must not lose them either
    cast(model)
    after = dict(model.named_buffers())
    target = next(model.parameters()).dtype
    assert target != torch.float64  # the cast reached the parameters
    for name, v in bufs.items():
        assert after[name].dtype == torch.float64, name
        assert torch.equal(after[name], v), name
    assert all(b.dtype == torch.long for k, b in after.items() if "count" in k)
    tracker = SpeedTracker(4).float()
    assert tracker.sums.dtype == torch.float64 and tracker.last.dtype == torch.float64


def test_balancer_loss_keeps_the_model_precision():
    x = {"colored": torch.rand(4, 3, 28, 28), "gray": torch.rand(4, 1, 28, 28)}
    y = torch.randint(0, 4, (4,))
    for dtype in (torch.float64, torch.float32):
        model, _ = _tiny_pair()
        model.to(dtype)
        bal = Balancer(model, "vanilla")
        out = bal.forward({k: v.to(dtype) for k, v in x.items()})
        loss = bal.loss(out, y)
        assert loss.dtype == dtype
        bal.backward(loss)
        log = bal.end_step()
        assert log.loss == loss.item()  # logged as computed, not rounded to float32
        assert bal.speed.sums.dtype == torch.float64
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model, _ = _tiny_pair()
        bal = Balancer(model, "vanilla")
        assert bal.loss(bal.forward(x), y).dtype == torch.float32  # autocast losses: float32, as before
