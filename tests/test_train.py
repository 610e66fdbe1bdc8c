"""The training loop: logs, checkpoints, exact resume, the finite-loss guard, clear refusals."""

import json

import pytest
import torch

from conftest import same_state, tiny_colored_data, tiny_three_data
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
    # alpha 0 triggers on every regular step after warm-up (half of the 4-step epoch, P = 2: steps 0..2 regular),
    # so the run alternates one regular step with Q = 2 re-balancing steps of one branch
    modes = [ln.split(",")[2] for ln in lines[1:]]
    assert len(modes) == 8 and modes[:3] == ["regular"] * 3 and modes[5] == "regular"
    assert modes[3] == modes[4] in ("rebalance0", "rebalance1") and modes[6] == modes[7] in ("rebalance0", "rebalance1")


@pytest.mark.parametrize("method", ["guided", pytest.param("random", marks=pytest.mark.slow)])
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
    assert same_state(a["optimizer"]["state"], b["optimizer"]["state"])
    assert (tmp_path / "a" / "steps.csv").read_text() == (tmp_path / "b" / "steps.csv").read_text()


@pytest.mark.parametrize(
    "kw",
    [
        {"method": "guided"},  # three branches, N-way MMTM
        {"method": "random", "hparams": {}},
        {"method": "vanilla", "hparams": {}, "fusion": "concat"},  # late fusion
    ],
    ids=["guided", "random", "vanilla-concat"],
)
def test_three_modalities_resume_equals_straight_run(tmp_path, kw):
    data = tiny_three_data()
    c = cfg(**kw)
    fit(c, tmp_path / "a", progress=False, data=data)
    fit(c.replace(epochs=1), tmp_path / "b", progress=False, data=data)
    fit(c, tmp_path / "b", resume=True, progress=False, data=data)
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    _state_equal(a["model"], b["model"])
    assert torch.equal(a["speed"]["sums"], b["speed"]["sums"]) and a["method"].keys() == b["method"].keys()
    assert same_state(a["method"], b["method"])  # the random generator too, every byte of it
    assert (tmp_path / "a" / "steps.csv").read_text() == (tmp_path / "b" / "steps.csv").read_text()
    header = (tmp_path / "a" / "steps.csv").read_text().splitlines()[0]
    rec = json.loads((tmp_path / "a" / "results.jsonl").read_text().splitlines()[-1])
    assert rec["modalities"] == ["m0", "m1", "m2"]
    if kw.get("fusion") == "concat":
        assert header == "step,epoch,mode,loss,mu_m0,mu_m1,mu_m2,d_speed"
        assert {"u_m0", "u_m1", "u_m2", "util_spread", "least_used", "acc_drop2"} <= rec["test"].keys()
    else:
        assert header.endswith("s_others_given_m0,s_others_given_m1,s_others_given_m2,d_speed")
        assert {"u_others_given_m2", "acc_head2_cut", "util_spread"} <= rec["test"].keys()
        assert set(rec["speed"]) == {"s_others_given_m0", "s_others_given_m1", "s_others_given_m2", "d_speed"}
    if kw["method"] == "guided":  # alpha 0: every decision after warm-up re-balances some branch
        modes = {ln.split(",")[2] for ln in (tmp_path / "a" / "steps.csv").read_text().splitlines()[1:]}
        assert modes & {"rebalance0", "rebalance1", "rebalance2"}


@pytest.mark.parametrize("method", ["guided", "random"])
def test_first_rebalancing_step_is_p_plus_one(tmp_path, method):
    # 72 training items, batch 16: P = 4 steps an epoch. The authors unlock re-balancing at the start of the
    # second epoch and decide after its first backward, so step P + 1 = 5 (0-based) is the first that may
    # re-balance; steps 0..4 are regular. guided with alpha 0 re-balances from exactly there.
    hp = {"alpha": 0.0, "Q": 2} if method == "guided" else {}
    out = fit(cfg(method=method, warmup_epochs=1.0, epochs=3, hparams=hp), tmp_path / "r", progress=False,
              data=tiny_colored_data())  # fmt: skip
    modes = [ln.split(",")[2] for ln in (out / "steps.csv").read_text().splitlines()[1:]]
    assert modes[:5] == ["regular"] * 5
    if method == "guided":
        assert modes[5] != "regular"
    assert set(modes[5:]) - {"regular"}


def test_guided_refuses_late_fusion_before_training(tmp_path):
    with pytest.raises(ValueError, match="--fusion mmtm"):
        fit(cfg(fusion="sum"), tmp_path / "r", progress=False, data=tiny_colored_data())
    assert not (tmp_path / "r").exists()


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


@pytest.mark.slow
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


def test_epoch_line_by_hand():
    from greedymm.train import epoch_line

    record = {
        "epoch": 4,
        "elapsed_s": 125.4,
        "train": {"loss": 0.03125, "acc": 0.99531, "rebalance_steps": 30, "rebalance_share": 0.25},
        "val": {"acc": 0.99417, "d_util": -0.0744},
        "test": {"acc": 0.604},
    }
    assert epoch_line(record, 20, True) == (
        "epoch 5/20: train loss 0.0312 acc 0.9953; val acc 0.9942 (best); test acc 0.6040; d_util val -0.074; "
        "re-balancing 25% of steps; 125 s"
    )
    # no d_util (three modalities), no re-balancing (vanilla), not the best epoch: those parts are left out
    record["val"] = {"acc": 0.5}
    record["train"] = {"loss": 1.0, "acc": 0.5, "rebalance_steps": 0, "rebalance_share": 0.0}
    assert epoch_line(record, 20, False) == (
        "epoch 5/20: train loss 1.0000 acc 0.5000; val acc 0.5000; test acc 0.6040; 125 s"
    )


def test_console_log_prints_one_line_per_epoch_and_nothing_without_it(tmp_path, capsys):
    data = tiny_colored_data()
    fit(cfg(epochs=2), tmp_path / "quiet", progress=False, data=data)
    assert capsys.readouterr().out == ""  # the library prints nothing unless asked
    fit(cfg(epochs=2), tmp_path / "loud", progress=False, data=data, log=["console"])
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["epoch 1/2", "epoch 2/2"]


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


class PoisonedSplit(CrashingSplit):
    """Wraps a split and puts a NaN pixel into the ``n``-th training batch it gives (0-based; reads with
    ``train=False``, such as the run's data fingerprint, are not counted)."""

    def batch(self, idx, train=False):
        x, y = self.split.batch(idx, train)
        self.n -= train
        if train and self.n == -1:
            x = {k: v.clone() for k, v in x.items()}
            next(iter(x.values()))[0].view(-1)[0] = float("nan")
        return x, y


def test_nan_loss_stops_with_step_and_checkpoint(tmp_path):
    import dataclasses

    data = tiny_colored_data()  # 72 training items, batch 16: 4 steps an epoch
    poisoned = dataclasses.replace(data, train=PoisonedSplit(data.train, 5))  # step 5 (0-based): epoch 1's second
    last = tmp_path / "r" / "last.pt"
    with pytest.raises(FloatingPointError, match=r"loss is nan at step 5 \(epoch 1\)") as err:
        fit(cfg(epochs=3), tmp_path / "r", progress=False, data=poisoned)
    assert f"the last good checkpoint is {last}." in str(err.value) and "--resume" in str(err.value)
    state = load_checkpoint(last)  # written at the end of epoch 0, before the bad step; nothing after it
    assert (state["epoch"], state["batch"], state["step"]) == (1, 0, 4)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    # resumed on clean data, the run ends as one that never met the bad batch
    fit(cfg(epochs=3), tmp_path / "r", resume=True, progress=False, data=data)
    fit(cfg(epochs=3), tmp_path / "clean", progress=False, data=data)
    _state_equal(load_checkpoint(last)["model"], load_checkpoint(tmp_path / "clean" / "last.pt")["model"])


def test_a_diverging_learning_rate_stops_naming_no_checkpoint_when_none_was_written(tmp_path):
    data = tiny_colored_data()
    with pytest.raises(FloatingPointError, match=r"at step \d+ \(epoch 0\); the last good checkpoint is none"):
        fit(cfg(optimizer="sgd", lr=1e30, momentum=0.0, epochs=3), tmp_path / "r", progress=False, data=data)


def test_torn_last_log_lines_are_repaired_on_resume_and_noted_in_reports(tmp_path):
    """A crash while a line is appended leaves it torn; resume drops it (that work is redone) instead of merging
    the next row into it, and a report leaves it out with a note."""
    from greedymm.report.aggregate import load_runs

    data = tiny_colored_data()
    fit(cfg(epochs=3), tmp_path / "a", progress=False, data=data)
    fit(cfg(epochs=2), tmp_path / "b", progress=False, data=data)
    with open(tmp_path / "b" / "steps.csv", "a") as f:
        f.write("8,2,regular,1.2")  # torn: no line end
    with open(tmp_path / "b" / "results.jsonl", "a") as f:
        f.write('{"epoch": 2, "step": 12, "val": {"ac')
    loaded = load_runs(tmp_path / "b")
    assert len(loaded.records["b"]) == 2 and any("results.jsonl is torn" in n for n in loaded.notes)
    assert any("steps.csv is torn" in n for n in loaded.notes)
    fit(cfg(epochs=3), tmp_path / "b", resume=True, progress=False, data=data)
    assert (tmp_path / "a" / "steps.csv").read_text() == (tmp_path / "b" / "steps.csv").read_text()
    ra, rb = ((p / "results.jsonl").read_text().splitlines() for p in (tmp_path / "a", tmp_path / "b"))
    assert [json.loads(x)["test"] for x in ra] == [json.loads(x)["test"] for x in rb]


def test_a_damaged_log_line_is_refused_with_file_and_line(tmp_path):
    from greedymm.logs import LogError
    from greedymm.rundir import RunDir

    data = tiny_colored_data()
    fit(cfg(epochs=2), tmp_path / "r", progress=False, data=data)
    lines = (tmp_path / "r" / "results.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "r" / "results.jsonl").write_text(lines[0][:40] + "\n" + lines[1])  # damaged, not the last
    with pytest.raises(LogError, match=r"results.jsonl line 1 is damaged"):
        RunDir(tmp_path / "r").records()
    with pytest.raises(LogError, match=r"results.jsonl line 1 is damaged"):
        fit(cfg(epochs=3), tmp_path / "r", resume=True, progress=False, data=data)
