"""Sweeps: run-folder naming, resume logic with a recording launcher, the local process pool, the CLI."""

import argparse
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from greedymm.cli_experiments import add_experiment_commands
from greedymm.sweep import (
    DONE,
    NEW,
    RESTART,
    RESUME,
    Job,
    LocalLauncher,
    RecordingLauncher,
    job_config,
    plan_sweep,
    run_hash,
    run_sweep,
)

METHODS = ["vanilla", "guided", "random"]


def plan(out, **kw):
    return plan_sweep(kw.pop("datasets", ["cg-digits"]), kw.pop("methods", METHODS), kw.pop("seeds", [0, 1]), out, **kw)


def test_folders_are_readable_and_hashed_by_config(tmp_path):
    jobs = plan(tmp_path, epochs=2)
    assert len(jobs) == 6
    assert all(re.fullmatch(r"cg-digits_(vanilla|guided|random)_s[01]_[0-9a-f]{8}", j.name) for j in jobs)
    assert [j.name for j in plan(tmp_path, epochs=2)] == [j.name for j in jobs]  # same command, same folders
    other = plan(tmp_path, epochs=3)
    assert not {j.name for j in other} & {j.name for j in jobs}
    # a hyper-parameter of guided reaches guided only: the vanilla folders stay shared
    tuned = {j.method: j for j in plan(tmp_path, epochs=2, seeds=[0], sets=["alpha=0.05"])}
    plain = {j.method: j for j in plan(tmp_path, epochs=2, seeds=[0])}
    assert tuned["vanilla"].folder == plain["vanilla"].folder and tuned["guided"].folder != plain["guided"].folder
    assert "alpha=0.05" in tuned["guided"].command() and "alpha=0.05" not in tuned["vanilla"].command()
    assert tuned["guided"].log == tmp_path / (tuned["guided"].name + ".log")


def test_bad_settings_fail_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="Did you mean 'cg-mnist'"):
        plan(tmp_path, datasets=["cg-mnst"])
    with pytest.raises(ValueError, match="Did you mean 'guided'"):
        plan(tmp_path, methods=["guidd"])
    with pytest.raises(ValueError, match="Did you mean 'lr'"):
        plan(tmp_path, sets=["lrr=0.1"])
    with pytest.raises(ValueError, match="alpha: a hyper-parameter of none of the methods"):
        plan(tmp_path, methods=["vanilla"], sets=["alpha=0.1"])
    with pytest.raises(ValueError, match="key=value"):
        plan(tmp_path, sets=["alpha"])
    assert not any(tmp_path.iterdir())


def test_commands_are_what_train_runs(tmp_path):
    """Each command parses with the real CLI and resolves to the config whose hash names the folder."""
    from greedymm.cli import _config, build_parser

    for job in plan(tmp_path, epochs=4, sets=["Q=3", "width=0.5", "data.random_color_val=true"]):
        cmd = job.command()
        assert cmd[:4] == [sys.executable, "-m", "greedymm", "train"] and cmd[-1] == "--no-progress"
        args = build_parser().parse_args(cmd[3:])
        assert args.out == str(job.folder)
        cfg = _config(args)
        assert cfg == job_config(job.dataset, job.method, job.seed, job.sets, job.epochs)
        assert job.name.endswith(run_hash(cfg))
        assert cfg.epochs == 4 and cfg.width == 0.5 and cfg.data_options == {"random_color_val": True}


def test_protocol_sweep_runs_the_protocol(tmp_path):
    """`sweep --protocol pmr-protocol`: its data set by default, its fusion for plain method names, its optimizer and
    data options in every run, `train --protocol` in every command, and folders apart from the plain sweep's."""
    from greedymm.cli import _config, build_parser

    jobs = plan_sweep([], ["vanilla", "pmr"], [0], tmp_path, protocol_name="pmr-protocol", epochs=3)
    assert [j.name.rsplit("_", 1)[0] for j in jobs] == [
        "cg-mnist-pmr-protocol_vanilla_s0",
        "cg-mnist-pmr-protocol_pmr_s0",
    ]
    for job in jobs:
        cmd = job.command(NEW)
        assert cmd[cmd.index("--protocol") + 1] == "pmr-protocol"
        cfg = _config(build_parser().parse_args(cmd[3:]))
        assert cfg == job_config(job.dataset, job.method, job.seed, job.sets, job.epochs, "pmr-protocol")
        assert job.name.endswith(run_hash(cfg))
        assert (cfg.fusion, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.schedule, cfg.epochs) == (
            "concat", "sgd", 1e-3, 0.9, 1e-4, "step", 3,
        )  # fmt: skip
        assert cfg.data_options == {"colors": "pmr", "arch": "pmr-convnet"}
        assert "--protocol" not in job.command(RESUME)  # the saved config holds it
    plain = plan_sweep(["cg-mnist"], ["vanilla@concat"], [0], tmp_path, epochs=3)
    assert plain[0].folder != jobs[0].folder
    with pytest.raises(ValueError, match="guided@mmtm"):  # guided needs MMTM; the protocol is late fusion
        plan_sweep([], ["guided"], [0], tmp_path, protocol_name="pmr-protocol")
    with pytest.raises(ValueError, match="unknown protocol 'pmr'"):
        plan_sweep([], ["vanilla"], [0], tmp_path, protocol_name="pmr")
    with pytest.raises(ValueError, match="--datasets"):
        plan_sweep([], ["vanilla"], [0], tmp_path)
    assert not any(tmp_path.iterdir())


def test_tensorboard_logging_reaches_every_run_also_on_resume(tmp_path):
    from greedymm.cli import build_parser

    plain = plan(tmp_path, epochs=2)
    jobs = plan(tmp_path, epochs=2, logs=["tensorboard"])
    assert [j.folder for j in jobs] == [j.folder for j in plain]  # logging is not part of a run's identity
    for job in jobs:
        for state in (NEW, RESUME):
            cmd = job.command(state)
            assert cmd[-3:] == ["--log", "tensorboard", "--no-progress"]
            assert build_parser().parse_args(cmd[3:]).log == ["tensorboard"]
    with pytest.raises(ValueError, match="unknown --log 'wandb'"):
        plan(tmp_path, logs=["wandb"])


def test_rerun_skips_finished_and_resumes_crashed(tmp_path):
    jobs = plan(tmp_path, epochs=2)
    first = RecordingLauncher()
    result = run_sweep(jobs, first, echo=lambda _: None)
    assert result.ok and len(first.commands) == 6 and all("--out" in c for c in first.commands)
    again = RecordingLauncher()
    result = run_sweep(jobs, again, echo=lambda _: None)
    assert again.commands == [] and len(result.skipped) == 6
    (jobs[2].folder / "done").unlink()  # a crash after a checkpoint: last.pt, no done
    assert jobs[2].state() == RESUME
    third = RecordingLauncher()
    lines: list[str] = []
    run_sweep(jobs, third, echo=lines.append)
    assert lines[0] == "sweep: 6 runs; 5 finished earlier, 1 to resume, 0 to start"
    assert third.commands == [[sys.executable, "-m", "greedymm", "train", "--resume", str(jobs[2].folder),
                               "--epochs", "2", "--no-progress"]]  # fmt: skip


def test_broken_folder_is_restarted_cleanly(tmp_path):
    (job,) = plan(tmp_path, methods=["guided"], seeds=[0])
    assert job.state() == NEW
    job.folder.mkdir(parents=True)
    for name in ("config.json", "results.jsonl", "steps.csv", ".last.pt.abc.tmp"):
        (job.folder / name).write_text("partial")
    (job.folder / "notes.txt").write_text("mine")  # not written by a run: kept
    assert job.state() == RESTART
    rec = RecordingLauncher(complete=False)
    run_sweep([job], rec, echo=lambda _: None)
    assert "--out" in rec.commands[0] and "--resume" not in rec.commands[0]
    assert sorted(p.name for p in job.folder.iterdir()) == [".lock", "notes.txt"]  # cleaned holding the lock


def test_dry_run_prints_and_touches_nothing(tmp_path):
    jobs = plan(tmp_path, methods=["vanilla"], seeds=[0, 1])
    jobs[1].folder.mkdir(parents=True)
    (jobs[1].folder / "config.json").write_text("{}")
    lines: list[str] = []
    rec = RecordingLauncher()
    run_sweep(jobs, rec, dry_run=True, echo=lines.append)
    assert rec.commands == [] and (jobs[1].folder / "config.json").exists()
    text = "\n".join(lines)
    assert f"--out {jobs[0].folder}" in text and "# restart" in text


def test_failures_are_listed_and_do_not_stop_the_rest(tmp_path):
    jobs = plan(tmp_path, methods=["vanilla", "guided"], seeds=[0])
    lines: list[str] = []
    result = run_sweep(jobs, RecordingLauncher(fail={jobs[0].name}), echo=lines.append)
    assert not result.ok and [j for j, _ in result.failed] == [jobs[0]]
    assert jobs[1].state() == DONE and jobs[0].state() == NEW
    assert str(jobs[0].log) in result.failure_text() and "FAILED (exit 1" in "\n".join(lines)


@dataclass(frozen=True)
class ScriptJob(Job):
    """A job whose command is a short python script instead of a training run."""

    script: str = ""

    def command(self, state=None, python=sys.executable):
        return [python, "-c", self.script]


@pytest.mark.process
def test_local_launcher_runs_a_pool_and_keeps_logs(tmp_path):
    def job(name, script):
        return ScriptJob("d", "m", 0, (), None, tmp_path / name, script=script)

    ok = job("ok", "import os; print('trained', os.environ['OMP_NUM_THREADS'])")
    bad = job("bad", "import sys; print('boom', file=sys.stderr); sys.exit(3)")
    other = job("other", "print('fine')")
    lines: list[str] = []
    result = run_sweep([ok, bad, other], LocalLauncher(), workers=2, echo=lines.append)
    assert [(j.name, c) for j, c in result.failed] == [("bad", 3)]
    assert "trained" in ok.log.read_text() and "boom" in bad.log.read_text() and "fine" in other.log.read_text()
    assert ok.log.read_text().startswith("# ")  # the command heads its log
    assert sum(line.startswith("[") for line in lines) == 3


@pytest.mark.process
def test_a_run_another_sweep_finished_meanwhile_is_not_started_again(tmp_path):
    """Two sweeps over one folder: a run the other sweep finished after this one was planned is left alone (its
    command would be refused: the folder holds a done run), and counted as done, not as a failure."""
    ran = tmp_path / "ran"  # written if the second job's command runs
    second = ScriptJob("d", "m", 1, (), None, tmp_path / "second", script=f"open({str(ran)!r}, 'w').close()")
    finish = (
        f"from greedymm.rundir import RunDir; import pathlib; f = pathlib.Path({str(second.folder)!r}); f.mkdir(); "
        "rd = RunDir(f); rd.checkpoint('last').write_bytes(b''); rd.config_file.write_text('{}'); "
        "rd.done_file.write_text('{}')"
    )
    first = ScriptJob("d", "m", 0, (), None, tmp_path / "first", script=finish)
    lines: list[str] = []
    result = run_sweep([first, second], LocalLauncher(), workers=1, echo=lines.append)
    assert result.failed == () and not ran.exists()
    assert "finished by another process; not started again" in second.log.read_text()


@pytest.mark.process
def test_an_interrupted_sweep_ends_its_runs_and_starts_no_more(tmp_path):
    """Ctrl-C during a sweep (README: a sweep can be interrupted and re-run): the runs in flight are ended (a few
    seconds to stop by themselves, then terminated), the queued one never starts, and the interrupt goes on up."""
    import os
    import signal
    import threading
    import time

    pids = [tmp_path / "a.pid", tmp_path / "b.pid"]
    never = tmp_path / "third-ran"
    sleep = "import os, time; open({!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    jobs = [ScriptJob("d", "m", k, (), None, tmp_path / f"slow{k}", script=sleep.format(str(p))) for k, p in
            enumerate(pids)]  # fmt: skip
    jobs.append(ScriptJob("d", "m", 2, (), None, tmp_path / "third", script=f"open({str(never)!r}, 'w').close()"))

    def press_ctrl_c_once_both_run() -> None:
        while not all(p.exists() and p.read_text() for p in pids):
            time.sleep(0.05)
        time.sleep(0.3)  # the sweep is waiting on its runs by now
        os.kill(os.getpid(), signal.SIGINT)  # as a terminal's Ctrl-C, to the sweep's process

    threading.Thread(target=press_ctrl_c_once_both_run, daemon=True).start()
    t0 = time.time()
    with pytest.raises(KeyboardInterrupt):
        run_sweep(jobs, LocalLauncher(), workers=2, echo=lambda _: None)
    assert time.time() - t0 < 30  # 5 s of grace, then terminated: not the 600 s the runs would take
    for p in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(int(p.read_text()), 0)  # both runs are gone
    time.sleep(0.5)
    assert not never.exists()  # the queued run never started


def _cli(argv):
    parser = argparse.ArgumentParser(prog="greedymm")
    add_experiment_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.fn(args)


def test_cli_sweep_dry_run_and_report(tmp_path, capsys):
    out = tmp_path / "s"
    argv = ["sweep", "--datasets", "cg-digits", "--seeds", "0", "--epochs", "1", "--out", str(out), "--dry-run"]
    assert _cli([*argv, "--set", "alpha=0.02", "Q=2"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("greedymm train") == 3 and "--set Q=2 --set alpha=0.02" in printed
    assert not out.exists()
    shutil.copytree(Path(__file__).parent / "data" / "report" / "sweep", out)
    assert _cli(["report", str(out), "--format", "csv"]) == 0
    assert (out / "report.csv").is_file() and "report:" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--workers"):
        _cli(["sweep", "--datasets", "cg-digits", "--out", str(out), "--workers", "0"])


def test_a_method_on_a_number_of_modalities_it_is_not_defined_for_is_refused_up_front(tmp_path):
    """AGM is defined for 2 or 3 modalities: a sweep naming six is refused before any run, naming the count."""
    six = "modalities=fou,fac,kar,pix,zer,mor"
    with pytest.raises(ValueError, match=r"'agm' is defined for 2 or 3 modalities, not 6 \(fou,fac,kar,pix,zer,mor\)"):
        plan(tmp_path, datasets=["mfeat"], methods=["vanilla@concat", "agm@concat"], sets=[six])
    assert len(plan(tmp_path, datasets=["mfeat"], methods=["vanilla@concat"], sets=[six])) == 2
    assert len(plan(tmp_path, datasets=["mfeat"], methods=["agm@concat"], sets=["modalities=pix,fou,mor"])) == 2


def test_methods_on_chosen_fusions(tmp_path):
    """method@fusion runs a method on a fusion of its own; a method not defined for a fusion is refused up front."""
    from greedymm.cli import _config, build_parser

    jobs = {j.name.split("_")[1]: j for j in plan(tmp_path, methods=["vanilla", "vanilla@concat", "ogm-ge@sum"])}
    assert set(jobs) == {"vanilla", "vanilla-concat", "ogm-ge-sum"}
    assert jobs["vanilla"].folder != jobs["vanilla-concat"].folder
    for name, fusion in (("vanilla", "mmtm"), ("vanilla-concat", "concat"), ("ogm-ge-sum", "sum")):
        cfg = _config(build_parser().parse_args(jobs[name].command()[3:]))
        assert cfg.fusion == fusion and jobs[name].name.endswith(run_hash(cfg))
    with pytest.raises(ValueError, match="write guided@mmtm"):
        plan(tmp_path, methods=["guided@concat"])
    with pytest.raises(ValueError, match="write guided@mmtm"):
        plan(tmp_path, methods=["vanilla", "guided"], sets=["fusion=sum"])
    with pytest.raises(ValueError, match="unknown fusion 'cat'"):
        plan(tmp_path, methods=["vanilla@cat"])
