"""Mixed precision and channels-last: close to fp32, exact resume (the fp16 loss scale is state), clear refusals."""

import json

import pytest
import torch

from conftest import fit_killed, tiny_colored_data
from greedymm.checkpoint import load_checkpoint
from greedymm.config import TrainConfig
from greedymm.models import build_model
from greedymm.precision import inputs_channels_last, stays_contiguous, to_channels_last
from greedymm.train import build_run, fit


def cfg(**kw):
    base = dict(dataset="tiny", method="guided", epochs=2, batch_size=16, optimizer="adam", lr=3e-3, width=0.25,
                warmup_epochs=0.5, hparams={"alpha": 0.0, "Q": 2}, device="cpu")  # fmt: skip
    return TrainConfig(**{**base, **kw})


def _losses(out):
    return [float(x.split(",")[3]) for x in (out / "steps.csv").read_text().splitlines()[1:]]


@pytest.mark.parametrize("precision", ["bf16", pytest.param("fp16", marks=pytest.mark.slow)])
def test_mixed_precision_follows_fp32(tmp_path, precision):
    data = tiny_colored_data()
    ref = _losses(fit(cfg(), tmp_path / "fp32", progress=False, data=data))
    got = _losses(fit(cfg(precision=precision, channels_last=True), tmp_path / precision, progress=False, data=data))
    assert len(got) == len(ref)
    assert got[:4] == pytest.approx(ref[:4], rel=0.02)  # before the trajectories drift apart
    rec = json.loads((tmp_path / precision / "results.jsonl").read_text().splitlines()[-1])
    assert all(isinstance(rec["val"][k], float) for k in ("u_m1_given_m0", "u_m0_given_m1", "d_util"))
    sums = load_checkpoint(tmp_path / precision / "last.pt")["speed"]["sums"]
    assert sums.dtype == torch.float64 and torch.isfinite(sums).all() and (sums > 0).all()


@pytest.mark.slow
def test_fp16_resumes_exactly_with_its_loss_scale(tmp_path, monkeypatch):
    data = tiny_colored_data()
    c = cfg(precision="fp16", epochs=3)
    fit(c, tmp_path / "a", progress=False, data=data)
    fit_killed(monkeypatch, c, tmp_path / "b", data, 6)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["scaler"]["scale"] > 0
    fit(c, tmp_path / "b", resume=True, progress=False, data=data)
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["scaler"] == b["scaler"]
    assert (tmp_path / "a" / "steps.csv").read_text() == (tmp_path / "b" / "steps.csv").read_text()


def test_fp16_refuses_methods_that_form_their_own_gradients():
    with pytest.raises(ValueError, match="fp16 loss scaling would distort; use --precision bf16"):
        build_run(cfg(method="mmpareto", fusion="concat", hparams={}, precision="fp16"), tiny_colored_data())
    build_run(cfg(method="mmpareto", fusion="concat", hparams={}, precision="bf16"), tiny_colored_data())


def test_channels_last_changes_layout_not_results():
    torch.manual_seed(0)
    a = build_model("small-cnn", ("colored", "gray"), (3, 1), 4, width=0.25).eval()
    b = build_model("small-cnn", ("colored", "gray"), (3, 1), 4, width=0.25).eval()
    b.load_state_dict(a.state_dict())
    to_channels_last(b)
    conv = b.branches[0].stages[0][1].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    x = {"colored": torch.rand(4, 3, 12, 12), "gray": torch.rand(4, 1, 12, 12)}
    assert torch.allclose(a(x).logits, b(inputs_channels_last(x)).logits, atol=1e-5)
    clip = build_model("i3d", ("rgb", "depth"), (3, 1), 4, width=0.125)
    to_channels_last(clip)  # 5-D weights take the 3-d layout
    weights = [p for p in clip.parameters() if p.dim() == 5]
    assert weights and all(w.is_contiguous(memory_format=torch.channels_last_3d) for w in weights)


def _resnet_pair():
    torch.manual_seed(0)
    a = build_model("resnet18", ("view0", "view6"), (3, 3), 5, width=0.125)
    b = build_model("resnet18", ("view0", "view6"), (3, 3), 5, width=0.125)
    b.load_state_dict(a.state_dict())
    return a, b


def test_resnet_last_stage_stays_contiguous_under_channels_last():
    a, b = _resnet_pair()
    a.eval(), b.eval()
    to_channels_last(b)
    cl = torch.channels_last
    for branch in b.branches:
        for i, stage in enumerate(branch.stages):
            # 3x3 and 7x7 kernels (a 1x1 kernel is both layouts at once)
            ws = [m.weight for m in stage.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
            assert ws
            if i == 3:  # layer4
                assert all(w.is_contiguous() and not w.is_contiguous(memory_format=cl) for w in ws)
            else:
                assert all(w.is_contiguous(memory_format=cl) and not w.is_contiguous() for w in ws)
    seen = []
    b.branches[0].stages[2][0].conv1.register_forward_pre_hook(
        lambda m, x: seen.append(x[0].is_contiguous(memory_format=cl))
    )
    b.branches[0].stages[3][0].conv1.register_forward_pre_hook(lambda m, x: seen.append(x[0].is_contiguous()))
    x = {"view0": torch.rand(2, 3, 64, 64), "view6": torch.rand(2, 3, 64, 64)}
    assert torch.allclose(a(x).logits, b(inputs_channels_last(x)).logits, atol=1e-5)
    assert seen == [True, True]  # layer3 reads channels-last maps, layer4 contiguous ones


def test_contiguous_stage_leaves_fp32_bits_alone():
    # without channels-last the last stage's contiguity is a no-op: outputs and gradients bit for bit
    a, b = _resnet_pair()
    for m in b.modules():
        if getattr(m, "stays_contiguous", False):
            m.stays_contiguous = False
    x = {"view0": torch.rand(2, 3, 64, 64), "view6": torch.rand(2, 3, 64, 64)}
    y = torch.tensor([1, 3])
    outs = []
    for model in (a, b):
        loss = model.loss(model(x), y)
        loss.backward()
        outs.append((loss.detach(), [p.grad for p in model.parameters()]))
    assert torch.equal(outs[0][0], outs[1][0])
    assert all(torch.equal(g, h) for g, h in zip(outs[0][1], outs[1][1], strict=True))


def test_stays_contiguous_covers_a_module_and_its_children_on_the_cpu_only():
    cl = torch.channels_last
    for device, kept in (("cpu", True), ("meta", False)):  # meta stands for any other device
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3))).to(device)
        net[1].stays_contiguous = True
        to_channels_last(net)
        assert net[0].weight.is_contiguous(memory_format=cl) and not net[0].weight.is_contiguous()
        inner = net[1][0].weight
        assert inner.is_contiguous() == kept and inner.is_contiguous(memory_format=cl) != kept
        assert stays_contiguous(net[1], torch.empty(1, device=device)) == kept
        assert not stays_contiguous(net[0], torch.empty(1, device=device))
