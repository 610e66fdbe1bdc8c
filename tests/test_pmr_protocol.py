"""PMR's CG-MNIST construction and protocol on our harness: colors, the 512-d encoder, the step schedule, --protocol."""

import json

import pytest
import torch

from conftest import tiny_colored_data
from greedymm.config import protocol
from greedymm.data.colored import PALETTE, make_colored_data
from greedymm.models import build_model, count_parameters


def _nearest_class(colors):
    return torch.cdist(colors, PALETTE).argmin(1)


def test_pmr_colors_jitter_more_and_test_colors_come_from_the_palette():
    g = torch.Generator().manual_seed(0)
    n = 4000
    images = (torch.rand(n, 8, 8, generator=g) * 255).to(torch.uint8)
    labels = torch.arange(n) % 10
    src = {"real_data": False, "source": "test", "note": ""}
    ours = make_colored_data("x", images, labels, images, labels, src, val_fraction=0.1)
    pmr = make_colored_data("x", images, labels, images, labels, src, val_fraction=0.1, colors="pmr")
    # training jitter: variance 0.020 vs 0.030 per channel (clamping to [0, 1] trims a little)
    var_ours = (ours.train.colors - PALETTE[ours.train.labels]).var().item()
    var_pmr = (pmr.train.colors - PALETTE[pmr.train.labels]).var().item()
    assert 0.015 < var_ours < 0.021 and 0.023 < var_pmr < 0.031
    # test: ours uniform in the cube; pmr palette colors of random classes (nearest palette color is close), and
    # in both the color says nothing about the label (nearest class = label for ~10%)
    for data in (ours, pmr):
        hit = (_nearest_class(data.test.colors) == data.test.labels).float().mean().item()
        assert 0.07 < hit < 0.13
    dist_pmr = torch.cdist(pmr.test.colors, PALETTE).min(1).values.mean().item()
    dist_ours = torch.cdist(ours.test.colors, PALETTE).min(1).values.mean().item()
    assert dist_pmr < 0.25 < dist_ours
    with pytest.raises(ValueError, match="colors must be one of"):
        make_colored_data("x", images, labels, images, labels, src, colors="kim")


def test_pmr_convnet_is_the_official_encoder_size():
    # BN(1) 2 + conv5x5 1->32 832 + conv3x3 32->32 9,248 + 32->64 18,496 + 64->64 36,928 + Linear 64->512 33,280
    encoder = 2 + 832 + 9248 + 18496 + 36928 + 33280
    uni = build_model("pmr-convnet", ("gray",), (1,), 10, fusion="concat")
    assert count_parameters(uni) == encoder + 512 * 10 + 10
    out = uni({"gray": torch.rand(2, 1, 28, 28)})
    assert out.features[0].shape == (2, 512)
    both = build_model("pmr-convnet", ("gray", "colored"), (1, 3), 10, fusion="concat")
    assert both.head.fc.in_features == 1024  # concat Linear(1024 -> 10), as PMR's CGClassifier
    mmtm = build_model("pmr-convnet", ("gray", "colored"), (1, 3), 10)  # MMTM after the 512-d projection too
    assert mmtm({"gray": torch.rand(2, 1, 28, 28), "colored": torch.rand(2, 3, 28, 28)}).logits.shape == (2, 10)


def test_protocol_and_step_schedule(tmp_path):
    cfg = protocol("pmr-protocol")
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.schedule, cfg.step_size) == (
        "sgd",
        1e-3,
        0.9,
        1e-4,
        "step",
        70,
    )
    assert cfg.fusion == "concat" and cfg.data_options == {"colors": "pmr", "arch": "pmr-convnet"}
    assert protocol("pmr-protocol", epochs=3, data_options={"colors": "ours"}).data_options["colors"] == "ours"
    with pytest.raises(ValueError, match="unknown protocol"):
        protocol("ogm-protocol")
    from greedymm.train import fit

    small = cfg.replace(dataset="tiny", epochs=3, batch_size=16, width=0.25, step_size=1, gamma=0.5, device="cpu",
                        method="vanilla", data_options={})  # fmt: skip
    out = fit(small, tmp_path / "r", progress=False, data=tiny_colored_data())
    lrs = [json.loads(x)["lr"] for x in (out / "results.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([5e-4, 2.5e-4, 1.25e-4])  # halved after every epoch


def test_protocol_from_the_command_line(tmp_path, capsys):
    from greedymm.cli import main

    out = tmp_path / "r"
    args = ["train", "--protocol", "pmr-protocol", "--dataset", "cg-digits", "--method", "vanilla", "--epochs", "1"]
    assert main([*args, "--width", "0.25", "--out", str(out), "--no-progress"]) == 0
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["schedule"] == "step" and saved["data_options"]["arch"] == "pmr-convnet"
    assert saved["epochs"] == 1 and saved["dataset"] == "cg-digits"  # the command line overrides the protocol
    rec = json.loads((out / "results.jsonl").read_text().splitlines()[-1])
    assert rec["source"]["colors"] == "pmr"
