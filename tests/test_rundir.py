"""The run folder (greedymm.rundir): its states, its logs, the best-record rule and the statistics; the pieces of
the loop around it (the epoch record, the optimizer and schedule tables, the step and epoch counters) and the
evaluation of a finished run without a training run."""

import ast
import json
import math
from pathlib import Path

import pytest
import torch

from greedymm import rundir
from greedymm.logs import LogError
from greedymm.rundir import BROKEN, DONE, NEW, RESUMABLE, RunDir, RunFolderError, Stat, best_record, mean, std, step_row

SRC = Path(rundir.__file__).parent


def test_states_follow_what_the_folder_holds(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.state() == NEW and run.unfinished  # no folder
    run.path.mkdir()
    (run.path / "notes.txt").write_text("mine")
    run.lock_file.write_text("{}")
    assert run.state() == NEW  # nothing of a run: a lock and the user's own files do not count
    run.steps_file.write_text("step,epoch,mode,loss,d_speed\n")
    run.config_file.write_text('{"config": {"seed": 3}}')
    assert run.state() == BROKEN  # started, killed before its first checkpoint
    run.checkpoint("last").write_bytes(b"")
    assert run.state() == RESUMABLE and run.unfinished and run.done_info() is None
    run.mark_done(epochs=3, step=54, best_epoch=2)
    assert run.state() == DONE and not run.unfinished
    assert run.done_info() == {"epochs": 3, "step": 54, "best_epoch": 2}
    assert run.saved_config() == {"seed": 3}
    with pytest.raises(RunFolderError, match="is finished"):
        run.clean()  # only what a run that cannot be resumed left is ever removed
    run.done_file.unlink()
    with pytest.raises(RunFolderError, match="is resumable"):
        run.clean()
    run.checkpoint("last").unlink()
    (run.path / ".last.pt.abc.tmp").write_bytes(b"")  # a temp file of an interrupted atomic write
    run.clean()
    assert sorted(p.name for p in run.path.iterdir()) == [".lock", "notes.txt"] and run.state() == NEW
    (run.path / ".best.pt.x.tmp").write_bytes(b"")
    assert run.state() == BROKEN  # the remains of an atomic write are a run's files too


def test_paths_and_their_errors(tmp_path):
    run = RunDir(tmp_path / "sweep" / "cg_guided_s0_abcd1234")
    assert run.sweep_log == tmp_path / "sweep" / "cg_guided_s0_abcd1234.log"
    assert run.checkpoint("best").name == "best.pt" and run.eval_file("last").name == "eval_last.json"
    with pytest.raises(ValueError, match="checkpoint must be one of"):
        run.checkpoint("final")
    with pytest.raises(FileNotFoundError, match="is it a run folder"):
        run.records()
    with pytest.raises(FileNotFoundError, match="is it a run folder"):
        run.saved_config()


def _log_run(tmp_path) -> RunDir:
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    run.start({"config": {}}, step_columns=("step", "epoch", "mode", "loss", "d_speed"))
    run.append_steps(
        [step_row(s, s // 2, "regular" if s % 2 else "rebalance0", [0.5 / (s + 1), -0.25]) for s in range(4)]
    )
    for epoch in range(2):
        run.append_record({"epoch": epoch, "step": 2 * epoch + 2, "val": {"acc": 0.5}, "test": {"acc": 0.5}})
    return run


def test_logs_read_back_and_a_torn_last_line_is_left_out(tmp_path):
    run = _log_run(tmp_path)
    assert run.steps_file.read_text().splitlines()[1:3] == ["0,0,rebalance0,0.5,-0.25", "1,0,regular,0.25,-0.25"]
    steps = run.steps()
    assert steps["step"] == [0, 1, 2, 3] and steps["mode"][:2] == ["rebalance0", "regular"]
    assert steps["loss"][2] == pytest.approx(0.5 / 3, rel=1e-5) and run.torn_logs() == []
    with open(run.steps_file, "a") as f:
        f.write("4,2,regular,0.1")  # a crash while the row was appended
    with open(run.results_file, "a") as f:
        f.write('{"epoch": 2, "st')
    assert run.torn_logs() == ["results.jsonl", "steps.csv"]
    assert run.steps()["step"] == [0, 1, 2, 3] and [r["epoch"] for r in run.records()] == [0, 1]
    run.truncate_logs(step=3, epoch=1)  # resume from the checkpoint at step 3, epoch 1
    assert run.steps()["step"] == [0, 1, 2] and [r["epoch"] for r in run.records()] == [0]
    assert run.torn_logs() == []


def test_a_damaged_line_before_the_end_is_refused(tmp_path):
    run = _log_run(tmp_path)
    lines = run.results_file.read_text().splitlines(keepends=True)
    run.results_file.write_text(lines[0][:10] + "\n" + lines[1])
    with pytest.raises(LogError, match=r"results.jsonl line 1 is damaged"):
        run.records()


def test_start_on_resume_keeps_the_step_log_and_clears_done(tmp_path):
    run = _log_run(tmp_path)
    run.mark_done(2, 4, 0)
    before = run.steps_file.read_text()
    run.start({"config": {"seed": 1}}, step_columns=None)
    assert run.steps_file.read_text() == before and run.state() == BROKEN  # no checkpoint in this folder
    assert not run.done_file.exists() and json.loads(run.config_file.read_text()) == {"config": {"seed": 1}}


def test_best_record_is_the_first_epoch_of_the_highest_validation_accuracy():
    recs = [{"epoch": e, "val": {"acc": a}, "test": {"acc": 1.0 - e}} for e, a in enumerate((0.5, 0.7, 0.7, 0.6))]
    assert best_record(recs)["epoch"] == 1  # never the test accuracy, the first of a tie
    with pytest.raises(ValueError, match="no records"):
        best_record([])


def test_mean_and_sample_std():
    assert mean([0.4, 0.5]) == pytest.approx(0.45) and std([0.4, 0.5]) == pytest.approx(math.sqrt(0.005))
    assert math.isnan(mean([])) and math.isnan(std([0.3]))
    s = Stat((1.0, 2.0, 3.0))
    assert (s.n, s.mean, s.std) == (3, 2.0, 1.0)
    from greedymm import reproduce
    from greedymm.report import aggregate

    assert aggregate.Stat is Stat and aggregate.best_record is best_record  # coded once
    assert (reproduce._mean, reproduce._std) == (mean, std)


def test_no_other_module_spells_a_run_folder_file_name():
    names = set(rundir.RUN_FILES) | {rundir.LOCK}
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "rundir.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(SRC)}:{node.lineno} {node.value!r}")
    assert found == []


# -- the loop around the folder -------------------------------------------------------------------------------
def test_epoch_record_is_a_pure_function_of_its_inputs():
    from greedymm.config import TrainConfig
    from greedymm.train import epoch_record, train_numbers

    cfg = TrainConfig(dataset="tiny", method="guided", epochs=2, device="cpu")
    train = train_numbers(12.0, 9.0, 16.0, 4.0, world=2, steps_per_epoch=4)
    assert train == {"loss": 0.75, "acc": 0.5625, "rebalance_steps": 2, "rebalance_share": 0.5}
    given = dict(
        epoch=1, step=8, elapsed=3.14159, train=train, val={"acc": 0.5}, test={"acc": 0.4},
        speed={"d_speed": 0.1}, lr=1e-3, cfg=cfg, fusion="mmtm", family="intermediate", modalities=("a", "b"),
        source={"real_data": False}, hparams={"alpha": 0.01}, method_log={}, versions={"greedymm": "x"},
        best_epoch=1,
    )  # fmt: skip
    rec = epoch_record(**given)
    assert rec == epoch_record(**given)  # same inputs, same record
    assert list(rec) == [
        "epoch", "step", "elapsed_s", "train", "val", "test", "speed", "lr", "dataset", "method", "fusion",
        "family", "seed", "modalities", "source", "squeeze_means", "config", "hparams", "method_log", "versions",
        "best_epoch",
    ]  # fmt: skip
    assert rec["elapsed_s"] == 3.142 and rec["modalities"] == ["a", "b"] and rec["config"] == cfg.to_dict()
    json.dumps(rec)  # one JSON line


def test_optimizer_and_schedule_tables_cover_every_choice():
    from greedymm.choices import OPTIMIZERS as OPTIMIZER_CHOICES
    from greedymm.choices import SCHEDULES as SCHEDULE_CHOICES
    from greedymm.config import TrainConfig
    from greedymm.run import OPTIMIZERS, SCHEDULES, build_optimizer

    assert set(OPTIMIZERS) == set(OPTIMIZER_CHOICES) and set(SCHEDULES) == set(SCHEDULE_CHOICES)
    model = torch.nn.Linear(2, 2)
    lr = torch.optim.lr_scheduler
    kinds = {"none": type(None), "cosine": lr.CosineAnnealingLR, "step": lr.StepLR, "plateau": lr.ReduceLROnPlateau}
    for name, kind in kinds.items():
        opt, sched = build_optimizer(model, TrainConfig(optimizer="sgd", lr=0.1, momentum=0.5, schedule=name))
        assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.5 and isinstance(sched, kind)
    opt, _ = build_optimizer(model, TrainConfig(optimizer="adam", lr=0.01, weight_decay=0.1))
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["weight_decay"] == 0.1


def test_the_balancer_counts_steps_and_epochs_and_the_run_reads_them():
    from conftest import tiny_colored_data
    from greedymm.config import TrainConfig
    from greedymm.run import build_run
    from greedymm.train import train_step

    data = tiny_colored_data()
    run = build_run(TrainConfig(dataset="tiny", method="guided", batch_size=16, width=0.25, device="cpu"), data)
    run.epoch_stats = torch.zeros(4, dtype=torch.float64)
    x, y = data.train.batch(torch.arange(16), train=True)
    logs = [train_step(run, x, y) for _ in range(3)]
    assert [log.step for log in logs] == [0, 1, 2] and run.step == run.balancer.step == 3
    run.balancer.epoch_end()
    assert run.epoch == 1 and run.state_dict()["step"] == 3 and run.state_dict()["epoch"] == 1
    with pytest.raises(AttributeError):
        run.step = 5  # one owner: the Balancer


def test_eval_of_a_finished_run_builds_no_training_run(tmp_path, monkeypatch):
    import greedymm.run
    from conftest import tiny_colored_data
    from greedymm.config import TrainConfig
    from greedymm.run import evaluate_checkpoint
    from greedymm.train import fit

    data = tiny_colored_data()
    cfg = TrainConfig(dataset="tiny", method="guided", epochs=2, batch_size=16, optimizer="adam", lr=3e-3,
                      width=0.25, warmup_epochs=0.5, device="cpu", hparams={"Q": 2})  # fmt: skip
    out = fit(cfg, tmp_path / "r", progress=False, data=data)

    def refuse(*args, **kwargs):
        raise AssertionError("evaluation built a training run")

    for name in ("build_run", "build_optimizer", "Balancer", "create_method", "DistributedDataParallel"):
        monkeypatch.setattr(greedymm.run, name, refuse)
    result = evaluate_checkpoint(out, "best", data=data)
    best = best_record(RunDir(out).records())
    assert result["epoch"] == best["epoch"] and result["val"] == best["val"] and result["test"] == best["test"]
    saved = json.loads(RunDir(out).eval_file("best").read_text())
    assert saved["val"] == best["val"] and saved["checkpoint"] == "best"


def test_demo_reuses_resumes_or_retrains_by_the_folder_state(tmp_path, monkeypatch):
    import greedymm.train
    from greedymm.demo import _train_or_reuse, demo_config

    calls = []
    monkeypatch.setattr(greedymm.train, "fit", lambda cfg, out, resume=False, progress=True: calls.append(resume))
    cfg = demo_config("vanilla", epochs=1)
    run = RunDir(tmp_path / "vanilla")
    _train_or_reuse(cfg, run.path, progress=False)
    assert calls == [False]  # new: trained
    run.path.mkdir()
    run.start({"config": cfg.to_dict()}, step_columns=("step",))
    run.checkpoint("last").write_bytes(b"")
    _train_or_reuse(cfg, run.path, progress=False)
    assert calls == [False, True]  # resumable with the same settings: resumed
    run.mark_done(1, 18, 0)
    _train_or_reuse(cfg, run.path, progress=False)
    assert calls == [False, True]  # done with the same settings: reused
    _train_or_reuse(demo_config("vanilla", epochs=2), run.path, progress=False)
    assert calls == [False, True, False] and not run.path.exists()  # other settings: the folder goes, trained anew
