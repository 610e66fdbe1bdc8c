"""Three modalities and late fusion: utilization worked out by hand on models built to use or ignore given
modalities (docs/DESIGN.md sections 1-2), the late fusions, and modality subsets."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from greedymm.data.base import MultiModalData, select_modalities
from greedymm.evaluate import evaluate
from greedymm.models import Branch, LateFusionNet, MMTMNet, build_model

# four items, labels 0, 0, 0, 1; m0 and m1 carry the label (1 + y), m2 carries nothing (always 1)
Y = torch.tensor([0, 0, 0, 1])
X = {
    "m0": (1.0 + Y.float()).view(4, 1, 1),
    "m1": (1.0 + Y.float()).view(4, 1, 1),
    "m2": torch.ones(4, 1, 1),
}


class Fixed:
    """A split holding one fixed batch."""

    def __len__(self):
        return 4

    def batch(self, idx, train=False):
        return {k: v[idx] for k, v in X.items()}, Y[idx]


def _branch(head=True):
    return Branch([nn.Identity()], channels=[1], num_classes=2 if head else None)


def _threshold(linear, scale, at):
    """Head logits [0, scale * (f - at)]: class 1 exactly when the feature f exceeds ``at``."""
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[0.0], [scale]]))
        linear.bias.copy_(torch.tensor([0.0, -scale * at]))


def hand_mmtm_net():
    """Heads 0 and 1 read their own modality (gates fixed near 1); branch 2's own input is constant, so head 2
    can only be right through its gate, which reads m0."""
    net = MMTMNet([_branch(), _branch(), _branch()], fuse_after=(0,), modalities=("m0", "m1", "m2"), ratio=2)
    mmtm = net.fusions[0]  # dim Z = int(2 * 3 / 2) = 3
    with torch.no_grad():
        mmtm.squeeze.weight.copy_(torch.eye(3))  # Z = ReLU(S) = S for these non-negative inputs
        mmtm.squeeze.bias.zero_()
        for k in (0, 1):
            mmtm.gates[k].weight.zero_()
            mmtm.gates[k].bias.fill_(20.0)  # g = sigma(20) ~ 1: branch k sees its own input only
        mmtm.gates[2].weight.copy_(torch.tensor([[40.0], [0.0], [0.0]]).T)  # g_2 = sigma(40 (S_0 - 1.5))
        mmtm.gates[2].bias.fill_(-60.0)
        for k, m in enumerate((1.2, 1.25, 1.0)):  # train-split means of S_k
            mmtm.buffer("sq_mean", k).fill_(m)
    _threshold(net.branches[0].head, 10.0, 1.5)
    _threshold(net.branches[1].head, 10.0, 1.5)
    _threshold(net.branches[2].head, 10.0, 0.5)
    return net.eval()


def test_three_modality_mmtm_utilization_by_hand():
    m = evaluate(hand_mmtm_net(), Fixed(), pairwise=True)
    # every head right on all four items
    assert (m["acc_head0"], m["acc_head1"], m["acc_head2"], m["acc"]) == (1.0, 1.0, 1.0, 1.0)
    # cut all others: heads 0 and 1 unchanged; head 2's gate reads mean S_0 = 1.2 -> g_2 ~ 0 -> always class 0,
    # right on the three items of class 0: A(f_2') = 0.75, u(others|m2) = (1 - 0.75) / 1 = 0.25
    assert (m["acc_head0_cut"], m["acc_head1_cut"], m["acc_head2_cut"]) == (1.0, 1.0, 0.75)
    assert m["u_others_given_m0"] == 0.0 and m["u_others_given_m1"] == 0.0
    assert m["u_others_given_m2"] == pytest.approx(0.25)
    assert m["util_spread"] == pytest.approx(0.25) and m["least_used"] == 2 and "d_util" not in m
    # pairwise: only removing m0 hurts head 2
    assert m["u_m0_given_m2"] == pytest.approx(0.25) and m["u_m1_given_m2"] == 0.0
    assert m["u_m0_given_m1"] == 0.0 and m["u_m2_given_m0"] == 0.0


def test_three_modality_late_fusion_utilization_by_hand():
    net = LateFusionNet([_branch(False) for _ in range(3)], ("m0", "m1", "m2"), 2, fusion="concat")
    with torch.no_grad():
        # logits [0, 10 (z_0 - 1.5) + 0 z_1 + 0 z_2]: the prediction uses m0 only
        net.head.fc.weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]]))
        net.head.fc.bias.copy_(torch.tensor([0.0, -15.0]))
        for k, v in enumerate((1.2, 1.25, 1.0)):
            net.means.buffer("mean", k).fill_(v)
    m = evaluate(net.eval(), Fixed())
    assert m["acc"] == 1.0
    # drop m0 (z_0 -> 1.2): always class 0, A = 0.75 -> u(m0) = 0.25; m1 and m2 are not used: u = 0
    assert (m["acc_drop0"], m["acc_drop1"], m["acc_drop2"]) == (0.75, 1.0, 1.0)
    assert (m["u_m0"], m["u_m1"], m["u_m2"]) == (pytest.approx(0.25), 0.0, 0.0)
    assert m["least_used"] == 1 and m["util_spread"] == pytest.approx(0.25)


def test_means_come_from_training_forwards():
    net = LateFusionNet([_branch(False) for _ in range(3)], ("m0", "m1", "m2"), 2, fusion="sum").train()
    net(X)
    assert net.commit_squeeze_means()
    assert net.means.mean0.tolist() == [1.25] and net.means.mean2.tolist() == [1.0]  # (1 + 1 + 1 + 2) / 4


@pytest.mark.parametrize("fusion", ["concat", "sum", "film", "gated"])
def test_late_fusions_forward_and_every_parameter_learns(fusion):
    torch.manual_seed(0)
    net = build_model("small-cnn", ("gray", "colored"), (1, 3), 5, width=0.25, fusion=fusion, unimodal_heads=True)
    assert net.family == "late" and net.fusion == fusion
    x = {"gray": torch.rand(4, 1, 12, 12), "colored": torch.rand(4, 3, 12, 12)}
    out = net(x)
    assert out.logits.shape == (4, 5) and len(out.heads) == 2 and out.features[0].shape == (4, 16)
    loss = net.loss(out, torch.arange(4)) + sum(F.cross_entropy(h, torch.arange(4)) for h in out.heads)
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # FiLM and gated: the first modality conditions the second, so the prediction depends on both
    changed = net({**x, "gray": torch.rand(4, 1, 12, 12)}).logits
    assert not torch.allclose(changed, out.logits)


def test_film_and_gated_need_two_modalities_and_uni_modal_is_late():
    for fusion in ("film", "gated"):
        with pytest.raises(ValueError, match="exactly two modalities"):
            build_model("small-cnn", ("a", "b", "c"), (1, 1, 1), 3, width=0.25, fusion=fusion)
    uni = build_model("small-cnn", ("gray",), (1,), 3, width=0.25)  # fusion mmtm asked, one modality
    assert isinstance(uni, LateFusionNet) and uni.fusion == "none"
    assert uni({"gray": torch.rand(2, 1, 12, 12)}).logits.shape == (2, 3)
    assert isinstance(build_model("small-cnn", ("a", "b", "c"), (1, 1, 1), 3, width=0.25), MMTMNet)


def test_mmtm_speed_groups_for_three_branches():
    net = build_model("small-cnn", ("a", "b", "c"), (1, 1, 1), 3, width=0.25)
    groups = net.speed_groups()
    assert len(groups) == 6
    ids = [{id(p) for p in g} for g in groups]
    for f in net.fusions:
        squeeze = {id(p) for p in f.squeeze.parameters()}
        for k in range(3):
            assert squeeze <= ids[3 + k]  # W_s in every psi_k
            assert {id(p) for p in f.gates[k].parameters()} <= ids[3 + k]
            assert not {id(p) for p in f.gates[k].parameters()} & ids[3 + (k + 1) % 3]
    assert not ids[0] & ids[1] and not ids[0] & ids[3]


def test_select_modalities_reorders_and_refuses_unknown_names():
    from greedymm.data import load_dataset

    data = load_dataset("synthetic", modalities=3, size=40, test_size=20, classes=2)
    sub = select_modalities(data, ["m2", "m0"])
    assert sub.modalities == ("m2", "m0") and sub.in_channels == (1, 1)
    x, y = sub.train.batch(torch.arange(3))
    assert list(x) == ["m2", "m0"] and torch.equal(x["m0"], data.train.batch(torch.arange(3))[0]["m0"])
    with pytest.raises(ValueError, match="has modalities m0,m1,m2"):
        select_modalities(data, ["m3"])
    assert select_modalities(data, None) is data
    assert isinstance(sub, MultiModalData)
    assert math.isfinite(float(x["m2"].sum()))


@pytest.mark.parametrize("arch", ["small-cnn", "resnet18", "resnet18-small", "i3d"])
@pytest.mark.parametrize("fusion", ["mmtm", "sum"])
def test_every_backbone_in_both_families_with_three_modalities(arch, fusion):
    torch.manual_seed(0)
    net = build_model(arch, ("a", "b", "c"), (3, 1, 2), 4, width=0.125, fusion=fusion)
    shape = (2, 8, 32, 32) if arch == "i3d" else (2, 32, 32)
    x = {m: torch.randn(2, c, *shape[1:]) for m, c in zip(("a", "b", "c"), (3, 1, 2), strict=True)}
    out = net.train()(x)
    assert out.logits.shape == (2, 4) and len(out.features) == 3
    net.loss(out, torch.tensor([0, 3])).backward()
    assert all(p.grad is not None for p in net.parameters())
    net.eval()
    modes = net.forward_modes(x, ["regular", *net.utilization_modes()])
    assert all(torch.isfinite(o.logits).all() for o in modes.values())
