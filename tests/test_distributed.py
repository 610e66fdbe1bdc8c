"""torchrun + DDP on CPU (gloo, 2 processes) against one process with the same global batch and seed."""

import json

import pytest


@pytest.mark.parametrize(
    "method, modalities",
    [("guided", 2), ("random", 2), ("guided", 3)],
    ids=["guided", "random", "guided-3"],
)
def test_two_processes_match_one(tmp_path, ddp, method, modalities):
    one, two = tmp_path / "one", tmp_path / "two"
    records_one = ddp.train(one, method, processes=1, modalities=modalities)
    records_two = ddp.train(two, method, processes=2, modalities=modalities)
    # re-balancing decisions: identical on both ranks, and the same as in one process
    modes = [json.loads((two / f"modes_rank{r}.json").read_text()) for r in (0, 1)]
    assert modes[0] == modes[1] == json.loads((one / "modes_rank0.json").read_text())
    assert {"rebalance0", "rebalance1", "rebalance2"} & set(modes[0])
    # the process group is ended by fit on every rank, so no gloo thread is left for interpreter shutdown
    assert [json.loads((two / f"group_alive_rank{r}.json").read_text()) for r in (0, 1)] == [False, False]
    for a, b in zip(records_one, records_two, strict=True):
        assert a["step"] == b["step"]
        for split in ("val", "test"):
            keys = [k for k in a[split] if k.startswith("acc")] + ["n"]
            assert len(keys) == (6 if modalities == 2 else 8)  # fused, heads, cut heads, n
            for key in keys:
                assert a[split][key] == b[split][key], (split, key)
            assert a[split]["loss"] == pytest.approx(b[split]["loss"], rel=1e-4)
        assert a["train"]["loss"] == pytest.approx(b["train"]["loss"], rel=1e-4)
        assert a["train"]["rebalance_steps"] == b["train"]["rebalance_steps"]
        assert a["speed"]["d_speed"] == pytest.approx(b["speed"]["d_speed"], rel=1e-3, abs=1e-5)
    steps_one = (one / "steps.csv").read_text().splitlines()
    steps_two = (two / "steps.csv").read_text().splitlines()
    assert [s.split(",")[2] for s in steps_one] == [s.split(",")[2] for s in steps_two]


def test_two_process_resume_restores_each_ranks_random_draws(tmp_path, ddp):
    """With augmentation drawn from each rank's RNG, stop after 1 epoch and resume: same as a straight run."""
    import torch

    from greedymm.checkpoint import load_checkpoint

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    ddp.train(straight, "guided", epochs=2, augment=True)
    ddp.train(resumed, "guided", epochs=1, augment=True)
    assert len(load_checkpoint(resumed / "last.pt")["torch_rng"]) == 2  # one RNG state per rank
    ddp.train(resumed, "guided", epochs=2, resume=True, augment=True)
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(resumed / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert (straight / "steps.csv").read_text() == (resumed / "steps.csv").read_text()
    # resuming those 2 processes' checkpoint in 1 process is refused: its random draws cannot continue exactly
    from conftest import tiny_colored_data
    from ddp_worker import config
    from greedymm.train import RunError, fit

    with pytest.raises(RunError, match=r"written by 2 process\(es\).*--nproc-per-node 2"):
        fit(config("guided", 3), resumed, resume=True, progress=False, data=tiny_colored_data())
