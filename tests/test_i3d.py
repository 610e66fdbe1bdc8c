"""I3D branches (Carreira & Zisserman 2017) in the two-branch network: gradients, groups, the cut path, size."""

import pytest
import torch
import torch.nn.functional as F

from greedymm.models import MMTMNet, count_parameters
from greedymm.models.i3d import I3D_FUSE_AFTER, I3D_STAGE_NAMES, SamePadMaxPool3d, i3d_branch

CLASSES = 5


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _ids(params):
    return {id(p) for p in params}


@pytest.fixture
def net():
    torch.manual_seed(0)
    branches = [i3d_branch(3, CLASSES, width=0.125), i3d_branch(1, CLASSES, width=0.125)]
    return MMTMNet(branches, I3D_FUSE_AFTER, ("rgb", "depth"))


def _inputs(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "rgb": torch.randn(batch, 3, 8, 32, 32, generator=g),
        "depth": torch.randn(batch, 1, 8, 32, 32, generator=g),
    }


def test_fuse_after_names_the_last_three_inception_blocks():
    assert [I3D_STAGE_NAMES[i] for i in I3D_FUSE_AFTER] == ["Mixed_4f", "Mixed_5b", "Mixed_5c"]


def test_forward_backward_no_nan_and_every_parameter_gets_a_gradient(net):
    net.train()
    l0, l1 = net(_inputs()).heads
    assert l0.shape == l1.shape == (2, CLASSES)
    assert torch.isfinite(l0).all() and torch.isfinite(l1).all()
    y = torch.tensor([0, 3])
    (F.cross_entropy(l0, y) + F.cross_entropy(l1, y)).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    assert any(p.grad.abs().sum() > 0 for p in net.fusions.parameters())


def test_theta_and_psi_partition_the_parameters(net):
    theta0, theta1 = _ids(net.theta(0)), _ids(net.theta(1))
    psi0, psi1 = _ids(net.psi(0)), _ids(net.psi(1))
    assert theta0 | theta1 | psi0 | psi1 == _ids(net.parameters())
    assert not theta0 & theta1 and not (theta0 | theta1) & (psi0 | psi1)
    squeeze = set().union(*(_ids(f.squeeze.parameters()) for f in net.fusions))
    assert psi0 & psi1 == squeeze
    for f in net.fusions:
        assert _ids(f.gates[0].parameters()) <= psi0 - psi1
        assert _ids(f.gates[1].parameters()) <= psi1 - psi0
    assert len(net.fusions) == 3


def test_cut_mode_head0_ignores_depth_and_head1_ignores_rgb(net):
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.reset_running_stats()
            m.momentum = None  # running stats = this one batch's, so eval-mode activations keep their scale
    net.train()
    net(_inputs(4, seed=1))  # also fills the squeeze sums, so the cut path uses non-trivial means
    assert net.commit_squeeze_means()
    net.eval()
    x = _inputs(2, seed=2)
    y0, y1 = net(x, mode="cut").heads
    assert torch.allclose(net({**x, "depth": torch.randn_like(x["depth"])}, mode="cut").heads[0], y0)
    assert torch.allclose(net({**x, "rgb": torch.randn_like(x["rgb"])}, mode="cut").heads[1], y1)
    # in regular mode depth does reach head 0, so the check above could fail
    assert not torch.allclose(net({**x, "depth": torch.randn_like(x["depth"])}).heads[0], net(x).heads[0])


def _published_i3d_parameters(in_channels: int, classes: int) -> int:
    """Inception-v1 table (Szegedy et al. 2015) inflated to 3-D; bias-free convs + BN (2 per channel)."""

    def conv(c_in, c_out, k):
        return k**3 * c_in * c_out + 2 * c_out

    def block(c_in, a, b_red, b, c_red, c, d):
        one = conv(c_in, a, 1)
        two = conv(c_in, b_red, 1) + conv(b_red, b, 3)
        three = conv(c_in, c_red, 1) + conv(c_red, c, 3)
        pool = conv(c_in, d, 1)
        return one + two + three + pool

    stem = conv(in_channels, 64, 7) + conv(64, 64, 1) + conv(64, 192, 3)
    blocks = [
        (192, 64, 96, 128, 16, 32, 32),
        (256, 128, 128, 192, 32, 96, 64),
        (480, 192, 96, 208, 16, 48, 64),
        (512, 160, 112, 224, 24, 64, 64),
        (512, 128, 128, 256, 24, 64, 64),
        (512, 112, 144, 288, 32, 64, 64),
        (528, 256, 160, 320, 32, 128, 128),
        (832, 256, 160, 320, 32, 128, 128),
        (832, 384, 192, 384, 48, 128, 128),
    ]
    return stem + sum(block(*b) for b in blocks) + 1024 * classes + classes


def test_full_width_parameter_count_matches_the_published_architecture():
    branch = i3d_branch(3, 400)
    n = count_parameters(branch)
    assert n == _published_i3d_parameters(3, 400) == 12_697_264
    assert 12e6 < n < 13e6  # Quo Vadis, Table 1: 12M parameters per I3D stream
    assert branch.channels == (192, 256, 480, 512, 512, 512, 528, 832, 832, 1024)


def test_width_scales_every_channel_count_with_at_least_one():
    assert i3d_branch(3, 2, width=0.5).channels == (96, 128, 240, 256, 256, 256, 264, 416, 416, 512)
    tiny = i3d_branch(1, 2, width=1e-3)
    assert min(tiny.channels) >= 1
    out = tiny.stages[0](torch.randn(2, 1, 4, 16, 16))
    assert out.shape[1] == tiny.channels[0] == 1


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_same_pad_max_pool_gives_ceil_sizes_and_never_picks_the_padding(n):
    pool = SamePadMaxPool3d((3, 3, 3), (2, 2, 2))
    x = -torch.rand(1, 2, n, n + 1, n + 2) - 1  # all negative: zero padding would win the max, -inf must not
    y = pool(x)
    assert y.shape[2:] == tuple(-(-s // 2) for s in x.shape[2:])
    assert torch.isfinite(y).all() and (y < 0).all()
