"""`greedymm demo`: vanilla vs guided on the embedded CG-Digits set, a table and a markdown report.

An experiment command beside ``reproduce`` and ``sweep``: it trains (or reuses) two runs, then renders them with
``greedymm.report``."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from .atomic import atomic_write_text
from .config import TrainConfig, preset
from .report import comparison_table, run_summary, source_line
from .report.figures import plot_d_speed, plot_epochs
from .rundir import DONE, NEW, RESUMABLE, RunDir

DEMO_DATASET = "cg-digits"
DEMO_METHODS = ("vanilla", "guided")


def demo_config(method: str, epochs: int | None = None) -> TrainConfig:
    cfg = preset(DEMO_DATASET, method=method, seed=0)
    return cfg.replace(epochs=epochs) if epochs else cfg


def _train_or_reuse(cfg: TrainConfig, out: Path, progress: bool) -> None:
    from .train import fit

    rd = RunDir(out)
    state = rd.state()
    if state != NEW:
        same = rd.config_file.is_file() and rd.saved_config() == cfg.to_dict()
        if same and state == DONE:
            print(f"{out}: finished earlier with the same settings; reusing it (--fresh retrains)")
            return
        if same and state == RESUMABLE:
            fit(cfg, out, resume=True, progress=progress)
            return
        shutil.rmtree(out)  # a demo folder of other settings (or a broken one): the demo owns it
    fit(cfg, out, progress=progress)


def run_demo(out: Path, epochs: int | None = None, fresh: bool = False, progress: bool = True) -> str:
    out = Path(out)
    t0 = time.time()
    runs = {}
    for method in DEMO_METHODS:
        run = out / method
        if fresh and run.exists():
            shutil.rmtree(run)
        _train_or_reuse(demo_config(method, epochs), run, progress)
        runs[method] = run
    summaries = {m: run_summary(r) for m, r in runs.items()}
    table = comparison_table(summaries)
    cfg = demo_config("guided", epochs)
    first = next(iter(summaries.values()))
    m0, m1 = first["last"]["modalities"]
    plot_d_speed(runs, out / "d_speed.png", title=f"d_speed during training, {DEMO_DATASET}")
    plot_epochs(runs, out / "epochs.png", title=f"{DEMO_DATASET}: m0 = {m0}, m1 = {m1}")
    report = "\n".join(
        [
            "# greedymm demo: vanilla vs guided (balanced) multi-modal learning",
            "",
            source_line(first),
            f"m0 = {m0} (colors tied to the label in train/val, random in test), m1 = {m1}.",
            f"Schedule: {cfg.epochs} epochs, {cfg.optimizer} lr {cfg.lr}, batch {cfg.batch_size}, seed {cfg.seed}; "
            f"guided: alpha {cfg.hparams.get('alpha', 0.01)}, Q {cfg.hparams.get('Q', 5)}, warm-up "
            f"{cfg.warmup_epochs} epoch. Test numbers at the best-validation checkpoint unless marked.",
            "",
            table,
            "",
            "d_util > 0: head 0 leans on m1 more than head 1 leans on m0; d_util < 0: the reverse. A vanilla model "
            "trained on label-colored data leans on the color, so its gray head uses m0 heavily (u(m0|m1) large) "
            "and its fused test accuracy, where colors are random, is low.",
            "",
            "![d_speed over steps](d_speed.png)",
            "",
            "![d_util and per-head accuracy over epochs](epochs.png)",
            "",
            f"Wall time of this command: {time.time() - t0:.0f} s.",
            "",
        ]
    )
    atomic_write_text(out / "report.md", report)
    terminal_table = table.replace("\\|", "|")  # markdown escapes are for the file, not the terminal
    text = f"{source_line(first)}\n\n{terminal_table}\n\nreport: {out / 'report.md'} (figures d_speed.png, epochs.png)"
    print(text)
    return text
