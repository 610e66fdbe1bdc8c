"""The training loop: logs, checkpoints, exact resume, the finite-loss guard, clear refusals."""

import json

import pytest
import torch

from conftest import tiny_colored_data
from greedymm.checkpoint import load_checkpoint
from greedymm.config import TrainConfig
from greedymm.train import RunError, fit


def cfg(**kw):
    base = dict(
        dataset="tiny",
        method="guided",
        epochs=2,
        batch_size=16,
        optimizer="adam",
        lr=3e-3,
        width=0.25,
        warmup_epochs=0.5,
        hparams={"alpha": 0.0, "Q": 2},
        device="cpu",
    )
    return TrainConfig(**{**base, **kw})


def _state_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_run_folder_contents(tmp_path):
    out = fit(cfg(), tmp_path / "r", progress=False, data=tiny_colored_data())
    assert {"config.json", "results.jsonl", "steps.csv", "best.pt", "last.pt", "done"} <= {
        p.name for p in out.iterdir()
    }
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [0, 1]
    r = recs[-1]
    for split in ("val", "test"):
        assert {"acc", "acc_head0", "acc_head1", "u_m1_given_m0", "u_m0_given_m1", "d_util"} <= r[split].keys()
    assert r["config"]["method"] == "guided" and r["hparams"] == {"alpha": 0.0, "Q": 2} and "torch" in r["versions"]
    lines = (out / "steps.csv").read_text().splitlines()
    assert lines[0].startswith("step,epoch,mode") and len(lines) == 1 + r["step"]
    # alpha 0 triggers on every regular step after warm-up: re-balancing windows of Q = 2 must appear
    modes = [ln.split(",")[2] for ln in lines[1:]]
    assert modes[:2] == ["regular", "regular"] and {"rebalance0", "rebalance1"} & set(modes)


@pytest.mark.parametrize("method", ["guided", "random"])
def test_resume_equals_straight_run(tmp_path, method):
    data = tiny_colored_data()
    fit(
        cfg(method=method, hparams={} if method == "random" else {"alpha": 0.0, "Q": 2}),
        tmp_path / "a",
        progress=False,
        data=data,
    )
    c = cfg(method=method, hparams={} if method == "random" else {"alpha": 0.0, "Q": 2})
    fit(c.replace(epochs=1), tmp_path / "b", progress=False, data=data)
    fit(c, tmp_path / "b", resume=True, progress=False, data=data)
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    _state_equal(a["model"], b["model"])
    assert a["method"].keys() == b["method"].keys()
    assert torch.equal(a["speed"]["sums"], b["speed"]["sums"])
    assert a["step"] == b["step"] and a["method"]["mode"] == b["method"]["mode"]
    assert str(a["optimizer"]["state"]) == str(b["optimizer"]["state"])
    assert (tmp_path / "a" / "steps.csv").read_text() == (tmp_path / "b" / "steps.csv").read_text()


class Crash(Exception):
    pass


class CrashingSplit:
    """Wraps a split and raises after ``n`` batches: a run killed in the middle of an epoch."""

    def __init__(self, split, n):
        self.split, self.n = split, n

    def __len__(self):
        return len(self.split)

    def batch(self, idx, train=False):
        self.n -= 1
        if self.n < 0:
            raise Crash
        return self.split.batch(idx, train)


def test_resume_after_a_crash_mid_epoch(tmp_path):
    import dataclasses

    data = tiny_colored_data()  # 72 training items, batch 16: 4 steps an epoch
    fit(cfg(epochs=3), tmp_path / "a", progress=False, data=data)
    crashing = dataclasses.replace(data, train=CrashingSplit(data.train, 7))
    with pytest.raises(Crash):
        fit(cfg(epochs=3), tmp_path / "b", progress=False, data=crashing, checkpoint_every=2)
    state = load_checkpoint(tmp_path / "b" / "last.pt")
    assert (state["epoch"], state["batch"], state["step"]) == (1, 2, 6)  # the last checkpoint is mid-epoch
    fit(cfg(epochs=3), tmp_path / "b", resume=True, progress=False, data=data)
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    _state_equal(a["model"], b["model"])
    assert torch.equal(a["speed"]["sums"], b["speed"]["sums"]) and a["method"] == b["method"]
    assert (tmp_path / "a" / "steps.csv").read_text() == (tmp_path / "b" / "steps.csv").read_text()
    ra = [json.loads(x) for x in (tmp_path / "a" / "results.jsonl").read_text().splitlines()]
    rb = [json.loads(x) for x in (tmp_path / "b" / "results.jsonl").read_text().splitlines()]
    assert [r["test"] for r in ra] == [r["test"] for r in rb]


def test_refusals(tmp_path):
    data = tiny_colored_data()
    fit(cfg(epochs=1), tmp_path / "r", progress=False, data=data)
    with pytest.raises(RunError, match="already holds a run"):
        fit(cfg(epochs=1), tmp_path / "r", progress=False, data=data)
    with pytest.raises(RunError, match="different config"):
        fit(cfg(epochs=2, lr=0.1), tmp_path / "r", resume=True, progress=False, data=data)
    with pytest.raises(RunError, match="already finished"):
        fit(cfg(epochs=1), tmp_path / "r", resume=True, progress=False, data=data)
    with pytest.raises(RunError, match="nothing to resume"):
        fit(cfg(), tmp_path / "empty", resume=True, progress=False, data=data)


def test_nan_loss_stops_with_step_and_checkpoint(tmp_path):
    data = tiny_colored_data()
    data.train.images[:] = 255  # harmless; the NaN comes from the learning rate below
    with pytest.raises(FloatingPointError, match=r"at step \d+ .*last good checkpoint"):
        fit(cfg(optimizer="sgd", lr=1e30, momentum=0.0, epochs=3), tmp_path / "r", progress=False, data=data)
