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
    s = {**GOOD, "vanilla": summary([-0.6, -0.4], [0.4, 0.4], [-0.2, 0.3])}
    v = verdicts(s)["2"]
    assert v.holds is False and "1/2 seeds" in v.numbers
    nan = {**GOOD, "vanilla": summary([-0.6], [0.4], [float("nan")])}
    assert verdicts(nan)["2"].holds is None


def test_claim_3_parts():
    worse = {**GOOD, "guided": summary([-0.7, -0.6, -0.8], [0.30, 0.31, 0.32])}
    v = verdicts(worse)
    assert (v["3a"].holds, v["3b"].holds, v["3"].holds) == (False, False, False)
    better_random = {**GOOD, "random": summary([0.0, 0.0, 0.0], [0.70, 0.71, 0.72])}
    v = verdicts(better_random)
    assert v["3c"].holds is False and v["3a"].holds and v["3"].holds is False
    one_seed = {m: summary(s.d_util_val[:1], s.test_acc[:1], s.d_speed[:1]) for m, s in GOOD.items()}
    assert "n/a (one seed)" in verdicts(one_seed)["3b"].numbers


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
    # the copied records: vanilla d_util -0.6/-0.4, d_speed -0.4/-0.2; guided |d_util| 0.15, acc 0.65 > 0.45
    for claim in ("1", "2", "3a", "3b", "3c", "3"):
        assert f"claim {claim}: HOLDS" in text
    assert (out / "report.md").is_file() and (out / "claims.md").read_text().strip() == lines[-1].strip()
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
    assert "claim 3: HOLDS" in "\n".join(lines)


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
