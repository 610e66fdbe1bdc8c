"""ResNet-18 branches (models/resnet.py) alone and inside the two-branch MMTM network."""

from __future__ import annotations

import torch

from greedymm.models import MMTMNet, count_parameters
from greedymm.models.resnet import RESNET18_FUSE_AFTER, resnet18_branch, resnet18_small_branch


def test_parameter_count_matches_the_standard_resnet18():
    # torchvision's resnet18() has 11,689,512 parameters (conv + BN + a 512 -> 1000 fc)
    assert count_parameters(resnet18_branch(3, 1000)) == 11_689_512
    # a 40-way head replaces 513,000 fc parameters by 512 * 40 + 40
    assert count_parameters(resnet18_branch(3, 40)) == 11_689_512 - 513_000 + 20_520


def test_stage_shapes_and_width():
    branch = resnet18_branch(3, 40, width=0.25)
    assert branch.channels == (16, 32, 64, 128)
    x = torch.randn(2, 3, 64, 64)
    shapes = []
    for stage in branch.stages:
        x = stage(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == [(16, 16, 16), (32, 8, 8), (64, 4, 4), (128, 2, 2)]  # /4, /8, /16, /32
    small = resnet18_small_branch(3, 40, width=0.25)
    assert small.stages[0](torch.randn(2, 3, 32, 32)).shape == (2, 16, 32, 32)  # no stem downsampling
    assert resnet18_branch(1, 5, width=0.001).channels == (1, 1, 1, 1)


def _net(builder=resnet18_branch) -> MMTMNet:
    torch.manual_seed(0)
    branches = [builder(3, 5, width=0.125) for _ in range(2)]
    return MMTMNet(branches, RESNET18_FUSE_AFTER, ("view0", "view6"))


def test_two_branch_resnet_forward_backward():
    for builder in (resnet18_branch, resnet18_small_branch):
        model = _net(builder)
        g = torch.Generator().manual_seed(1)
        x = {"view0": torch.randn(2, 3, 32, 32, generator=g), "view6": torch.randn(2, 3, 32, 32, generator=g)}
        y = torch.tensor([1, 3])
        l0, l1 = model(x).heads
        assert l0.shape == l1.shape == (2, 5)
        loss = torch.nn.functional.cross_entropy(l0, y) + torch.nn.functional.cross_entropy(l1, y)
        loss.backward()
        assert torch.isfinite(loss)
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name


def test_parameter_groups_partition_the_model():
    model = _net()
    ids = [{id(p) for p in group} for group in (model.theta(0), model.theta(1), model.psi(0), model.psi(1))]
    theta0, theta1, psi0, psi1 = ids
    squeeze = {id(p) for f in model.fusions for p in f.squeeze.parameters()}
    assert not theta0 & theta1 and not (theta0 | theta1) & (psi0 | psi1)
    assert psi0 & psi1 == squeeze  # the shared squeeze layer is in both
    assert psi0 - squeeze == {id(p) for f in model.fusions for p in f.gates[0].parameters()}
    assert psi1 - squeeze == {id(p) for f in model.fusions for p in f.gates[1].parameters()}
    assert theta0 | theta1 | psi0 | psi1 == {id(p) for p in model.parameters()}
    assert theta0 == {id(p) for p in model.branches[0].parameters()}
    assert len(model.fusions) == 3 and [f.channels for f in model.fusions] == [(16, 16), (32, 32), (64, 64)]


def test_cut_mode_isolates_head0_from_view6():
    model = _net()
    g = torch.Generator().manual_seed(2)
    x = {"view0": torch.randn(4, 3, 32, 32, generator=g), "view6": torch.randn(4, 3, 32, 32, generator=g)}
    model.train()
    model.reset_squeeze_sums()
    model(x)  # a training forward records the squeeze means the cut pass uses
    model.commit_squeeze_means()
    model.eval()
    with torch.no_grad():
        cut = model(x, mode="cut").heads[0]
        x2 = {**x, "view6": torch.randn(4, 3, 32, 32, generator=g)}
        assert torch.equal(model(x2, mode="cut").heads[0], cut)
        assert not torch.equal(model(x2)[0], model(x)[0])  # in regular mode view6 does reach head 0
