"""The model interface, over the registries: every architecture x fusion x modality count builds, trains in every
mode it declares and evaluates with every pass it declares; every method x fusion trains a step or is refused, by
what the model declares, with a message naming the fix. Inputs are tiny (cg-digits-sized 28 x 28 images for the
methods); the heavy backbones (i3d, resnet18, resnet18-small) are in the slow tier."""

import math

import pytest
import torch

from greedymm import choices
from greedymm.api import Balancer
from greedymm.data.colored import make_colored_data
from greedymm.evaluate import evaluate_batches
from greedymm.methods import list_methods, method_class
from greedymm.models import (
    ARCHITECTURES,
    CUT,
    FUSION_HEADS,
    FUSIONS,
    REGULAR,
    SPLITTING_FUSIONS,
    Mode,
    MultiModalNet,
    build_model,
    drop,
    rebalance,
    remove,
)

HEAVY = {"i3d", "resnet18", "resnet18-small"}
SHAPES = {"i3d": (4, 16, 16), "resnet18": (16, 16), "resnet18-small": (12, 12), "mlp": (), "seq1d": (20,),
          "text": (20,)}  # fmt: skip
CLASSES = 5  # SHAPES default: 28 x 28 images; mlp: feature vectors; seq1d, text: padded sequences, a mask channel last
MASKED = ("seq1d", "text")


def _channels(arch: str, k: int) -> int:
    return 1 + (k == 1) * 2 + (arch in MASKED)


def _cases():
    for arch in ARCHITECTURES:
        marks = [pytest.mark.slow] if arch in HEAVY else []
        for fusion in FUSIONS:
            counts = (2,) if FUSION_HEADS.get(fusion) and FUSION_HEADS[fusion].n_modalities == (2,) else (1, 2, 3)
            for n in counts:
                yield pytest.param(arch, fusion, n, marks=marks, id=f"{arch}-{fusion}-{n}")


def _inputs(arch: str, n: int, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = SHAPES.get(arch, (28, 28))
    x = {f"m{k}": torch.randn(batch, _channels(arch, k), *shape, generator=g) for k in range(n)}
    if arch in MASKED:  # the mask: the first item fills all 20 steps, the others end earlier (zero padding after)
        lengths = torch.tensor([20, 15, 9, 4]).repeat(batch)[:batch, None]
        for v in x.values():
            v[:, -1] = torch.arange(shape[0]) < lengths
            v[:, :-1] *= v[:, -1:]
    return x


def _model(arch: str, fusion: str, n: int, heads: bool = False) -> MultiModalNet:
    torch.manual_seed(0)
    chans = [_channels(arch, k) for k in range(n)]
    return build_model(arch, [f"m{k}" for k in range(n)], chans, CLASSES, width=0.125, fusion=fusion,
                       unimodal_heads=heads)  # fmt: skip


# -- names and registries ---------------------------------------------------------------------------------------
def test_fusion_registry_matches_the_torch_free_names():
    assert set(FUSION_HEADS) == set(choices.LATE_FUSIONS)
    assert FUSIONS == choices.FUSIONS
    two = {name for name, cls in FUSION_HEADS.items() if cls.n_modalities == (2,)}
    assert two == set(choices.TWO_MODALITY_FUSIONS)
    assert SPLITTING_FUSIONS == ("mmtm", "concat", "sum")


def test_modes_print_their_on_disk_names_and_parse_back():
    modes = [REGULAR, CUT, rebalance(0), rebalance(12), remove(1), drop(2)]
    names = ["regular", "cut", "rebalance0", "rebalance12", "remove1", "drop2"]
    assert [str(m) for m in modes] == names and [f"{m}" for m in modes] == names
    assert [Mode.parse(s) for s in names] == modes and Mode.parse(rebalance(3)) == rebalance(3)
    assert len({*modes, Mode.parse("cut")}) == len(modes)  # hashable, equal by value
    # a mode equals its name, so code written for string modes keeps working
    assert REGULAR == "regular" and rebalance(1) != "regular" and "rebalance1" == rebalance(1)
    assert {CUT: 1}["cut"] == 1 and {"drop2": 2}[drop(2)] == 2 and rebalance(0) != remove(0)
    for bad in ("rebalance", "cut0", "drop-1", "Regular", "remove1x", "rebalance١"):
        with pytest.raises(ValueError, match="unknown mode"):
            Mode.parse(bad)
    with pytest.raises(ValueError, match="names a modality"):
        Mode("drop")
    with pytest.raises(ValueError, match="unknown mode kind"):
        Mode("freeze", 0)


# -- every architecture x fusion x modality count -------------------------------------------------------------------
@pytest.mark.parametrize(("arch", "fusion", "n"), list(_cases()))
def test_model_contract(arch, fusion, n):
    model = _model(arch, fusion, n)
    x, y = _inputs(arch, n, 4), torch.arange(4) % CLASSES
    # training: every declared mode runs forward and backward; the speed groups and their names agree
    layout = model.speed_layout()
    assert len(layout.step_names) == len(layout.total_names) == n
    assert len(model.speed_groups()) == (2 * n if layout.conditional else n)
    assert REGULAR in model.training_modes()
    for mode in model.training_modes():
        model.train().zero_grad()
        out = model(x, mode)
        assert out.logits.shape == (4, CLASSES) and len(out.features) == n
        assert len(out.heads) == (n if model.has_unimodal_heads else 0)
        model.loss(out, y).backward()
        assert all(p.grad is not None for p in model.output_weights())
    # a mode it does not declare is refused by name
    with pytest.raises(ValueError, match="unknown mode"):
        model(x, rebalance(n))
    # evaluation: every declared pass, every name it declares, and the utilization computed from them
    model.reset_means()
    with model.recording_means():
        model.eval()(x)
    assert model.commit_means()
    passes = model.eval_passes(utilization=n > 1, pairwise=True)
    assert passes[0].mode == REGULAR and passes[0].names[0] == "acc"
    metrics = evaluate_batches(model, [(x, y), (x, y)], pairwise=True)
    assert metrics["n"] == 8 and math.isfinite(metrics["loss"])
    for p in passes:
        assert all(0 <= metrics[name] <= 1 for name in p.names)
    if n > 1:
        assert {p.mode for p in passes[1:]} == set(model.utilization_modes(pairwise=True))
        u = model.utilization({k: v for k, v in metrics.items() if k.startswith("acc")}, pairwise=True)
        assert u and all(k in metrics and (metrics[k] == v or math.isnan(v)) for k, v in u.items())
        assert ("d_util" in metrics) == (n == 2) and "util_spread" in metrics
    else:
        assert not any(k.startswith("u_") for k in metrics)
    # the per-modality parts, where the model says it has them
    if model.splits_per_modality:
        model.eval()
        out = model(x)
        parts = model.modality_logits(out)
        assert len(parts) == n and all(p.shape == (4, CLASSES) for p in parts)
        # MMTM's prediction is the mean of its heads; a late fusion's parts add up to it (the bias split or owned)
        whole = torch.stack(parts).mean(0) if model.fusion == "mmtm" else torch.stack(parts).sum(0)
        assert torch.allclose(whole, out.logits, atol=1e-5)
        params = {id(p) for p in model.parameters()}
        seen: set[tuple[int, int]] = set()
        for k in range(n):
            for s in model.modality_slices(k):
                assert id(s.param) in params
                cells = torch.zeros_like(s.param, dtype=torch.bool)
                cells[s.index] = True
                taken = {(id(s.param), int(i)) for i in cells.flatten().nonzero().flatten()}
                assert not (taken & seen), "two modalities claim the same parameter entries"
                seen |= taken
    else:
        with pytest.raises(ValueError, match="use --fusion"):
            model.modality_logits(model(x))


@pytest.mark.parametrize("fusion", ["concat", "sum", "film", "gated"])
def test_unimodal_heads_are_declared_and_read_one_modality(fusion):
    model = _model("small-cnn", fusion, 2, heads=True).eval()
    x = _inputs("small-cnn", 2, 3)
    assert model.has_unimodal_heads and len(model(x).heads) == 2
    own = model.unimodal_logits(x, 1)
    assert torch.allclose(own, model(x).heads[1], atol=1e-6)
    assert torch.allclose(model.unimodal_logits({**x, "m0": torch.randn_like(x["m0"])}, 1), own)
    assert not _model("small-cnn", fusion, 2).has_unimodal_heads


# -- every method x fusion -------------------------------------------------------------------------------------------
# what each method needs from the model, read off the model's own declarations (a method not listed needs nothing
# a two-modality model lacks)
NEEDS = {
    "guided": lambda m: all(rebalance(k) in m.training_modes() for k in range(m.n_modalities)),
    "random": lambda m: all(rebalance(k) in m.training_modes() for k in range(m.n_modalities)),
    "ogm-ge": lambda m: m.splits_per_modality,
    "mslr": lambda m: m.splits_per_modality,
}
FAST = {"gblending": {"super_epoch": 1}, "pmr": {"proto_fraction": 0.5}}  # one short estimate; enough prototypes
FIXES = ("--fusion", "unimodal_heads", "--modalities", "--method")


def _digits_like(seed: int = 0):
    """cg-digits-sized stand-in: 28 x 28 gray images (the colored modality made from them), 10 classes."""
    g = torch.Generator().manual_seed(seed)
    tx, sx = (torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8) for n in (24, 8))
    ty, sy = torch.arange(24) % 10, torch.arange(8) % 10
    source = {"real_data": False, "source": "test fixture", "note": "random"}
    return make_colored_data("digits-like", tx, ty, sx, sy, source, val_fraction=0.25, data_seed=seed)


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("name", list_methods())
def test_method_trains_a_step_or_is_refused_by_what_the_model_declares(name, fusion):
    data = _digits_like()
    cls = method_class(name)
    torch.manual_seed(0)
    model = build_model("small-cnn", data.modalities, data.in_channels, data.num_classes, width=0.125,
                        fusion=fusion, unimodal_heads=cls.needs_unimodal_heads)  # fmt: skip
    expect_refusal = not NEEDS.get(name, lambda m: True)(model)
    try:
        bal = Balancer(model, name, hparams=FAST.get(name, {}))
    except ValueError as e:
        assert expect_refusal, f"{name} refused a {fusion} model that declares what it needs: {e}"
        assert any(fix in str(e) for fix in FIXES), f"the refusal names no fix: {e}"
        return
    assert not expect_refusal, f"{name} accepted a {fusion} model that lacks what it needs"
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    bal.epoch_start(data.train, data.val, batch_size=8)
    x, y = data.train.batch(torch.arange(8), train=True)
    out = bal.forward(x)
    loss = bal.loss(out, y)
    opt.zero_grad()
    bal.backward(loss, opt)
    log = bal.end_step()
    assert log.finite and log.mode == REGULAR and set(log.speeds) == set(model.speed_layout().step_names)
    opt.step()
    bal.epoch_end(data.train, data.val, batch_size=8)
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    assert math.isfinite(bal.evaluate(data.val, batch_size=8)["acc"])


def test_a_method_refuses_a_model_by_its_declarations_not_its_fusion_name():
    """A late-fusion model whose fusion claims the name "concat" but whose head does not split is refused by OGM-GE
    (its declaration, not its name, decides); guided refuses a model without re-balancing modes."""
    model = _model("small-cnn", "film", 2)
    model.fusion = "concat"
    with pytest.raises(ValueError, match="per-modality logits"):
        Balancer(model, "ogm-ge")
    with pytest.raises(ValueError, match="MMTM gates"):
        Balancer(_model("small-cnn", "concat", 2), "guided")
