"""greedymm diagnose: the rules and warnings on hand-made run records, the protocol on synthetic data (a shortcut
makes the other modality under-used; two equally informative modalities are not greedy), a model with its own
fusion, reuse of finished runs, the budget, the report page in a real browser, and the command line."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess

import pytest
import torch
from torch import nn

import greedymm
from greedymm.diagnose import rules
from greedymm.diagnose.page import to_html, write_page
from greedymm.diagnose.protocol import Engine
from greedymm.report.evidence import t_quantile

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- hand-made run records -----------------------------------------------------------------------------------------
def rec(role, seed, val, *, method="vanilla", mods=("a", "b"), fusion="mmtm", without=None, sel=2, last=9, epochs=10,
        warmup=None, test=None, last_val=None):  # fmt: skip
    r = {
        "role": role, "method": method, "fusion": fusion, "modalities": list(mods), "seed": seed, "epochs": epochs,
        "selected_epoch": sel, "last_epoch": last, "val_acc": val, "test_acc": val - 0.1 if test is None else test,
        "last_val_acc": val if last_val is None else last_val, "last_test_acc": val - 0.1, "seconds": 10.0,
        "settings": {"fusion": fusion}, "folder": f"runs/{role}_{method}_{seed}",
    }  # fmt: skip
    if warmup is not None:
        r["warmup_epochs"] = warmup
    if without is not None:  # two modalities: only a = without b
        r["acc_without"] = dict(without)
        r["acc_only"] = {"a": without["b"], "b": without["a"]}
        r["util"] = {m: (val - w) / val for m, w in without.items()}
        r["robustness"] = {"missing": dict(without), "noise": {m: {"1.0": val - 0.2} for m in without}}
        r["speed"] = {"slowest": "a", "d_speed": 0.3, "definition": "test", "values": {}, "curve": {}}
    return r


def greedy_records(seeds=(0, 1, 2), epochs=10, sel=2):
    """a alone 0.70 / 0.72 / 0.68, b alone 0.99 / 0.98 / 0.99; the joint model (0.99) with only a left gets 0.30 /
    0.35 / 0.28, with only b left 0.97 / 0.96 / 0.98: it holds 0.11 / 0.21 / 0.07 of what a learns alone and
    0.97 / 0.97 / 0.99 of what b does."""
    a, b = [0.70, 0.72, 0.68], [0.99, 0.98, 0.99]
    only_a, only_b = [0.30, 0.35, 0.28], [0.97, 0.96, 0.98]
    out = []
    for i, s in enumerate(seeds):
        out += [
            rec("alone", s, a[i], mods=("a",), epochs=epochs, sel=sel),
            rec("alone", s, b[i], mods=("b",), epochs=epochs, sel=sel),
            rec("joint", s, 0.99, without={"a": only_b[i], "b": only_a[i]}, epochs=epochs, sel=sel),
        ]
    return out


def test_a_modality_the_joint_model_neglects_is_named_by_both_rules():
    d = rules.diagnose_records(greedy_records(), ["a", "b"], num_classes=4)
    assert d["under_used"] == ["a"] and d["balancing_warranted"]
    assert d["modalities"]["a"]["under_used_by"] == ["ignored", "under-trained"]
    assert d["verdict"] == rules.GREEDY_CANNOT_JUDGE and d["recommendation"] is None
    assert d["cannot_judge_because"][0] == "no cure ran"  # and vanilla's 0.99 on validation leaves no room
    # kept = (only - chance) / (alone - chance), chance 0.25
    kept = [(0.30 - 0.25) / (0.70 - 0.25), (0.35 - 0.25) / (0.72 - 0.25), (0.28 - 0.25) / (0.68 - 0.25)]
    assert d["modalities"]["a"]["kept"]["values"] == pytest.approx(kept)
    # utilization of a: (0.99 - only b) / 0.99 per seed, its 95% t interval over the three seeds
    u = [(0.99 - x) / 0.99 for x in (0.97, 0.96, 0.98)]
    mean = sum(u) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in u) / 2)
    half = t_quantile(0.975, 2) * sd / math.sqrt(3)
    assert d["modalities"]["a"]["u"]["mean"] == pytest.approx(mean)
    assert d["modalities"]["a"]["u"]["ci"] == pytest.approx([mean - half, mean + half])
    assert d["modalities"]["a"]["information"] == pytest.approx((0.70 - 0.25) / 0.75)
    fired = {(r["rule"], r["modality"]) for r in d["rules"] if r["fired"]}
    assert fired == {("ignored", "a"), ("under-trained", "a")}
    assert d["joint"]["best_alone"] == "b"
    assert d["speed"]["agrees_with_under_used"] == [True, True, True]


def test_a_cure_that_beats_vanilla_in_every_seed_is_recommended_and_ranked():
    recs = greedy_records()
    # guided: +0.005, +0.007, +0.006 over vanilla's 0.99: the 95% interval [0.0035, 0.0085] excludes 0
    recs += [
        rec("cure", s, 0.99 + d, method="guided", fusion="mmtm")
        for s, d in zip((0, 1, 2), (0.005, 0.007, 0.006), strict=True)
    ]
    recs += [
        rec("cure", s, v, method="uniform", fusion="concat") for s, v in zip((0, 1, 2), (0.98, 0.99, 0.97), strict=True)
    ]
    recs += [rec("reference", s, 0.985, fusion="concat") for s in (0, 1, 2)]
    d = rules.diagnose_records(recs, ["a", "b"], num_classes=4)
    assert d["verdict"] == rules.CURE_HELPS
    assert d["recommendation"]["method"] == "guided" and d["recommendation"]["fusion"] == "mmtm"
    assert [c["label"] for c in d["cures"]] == ["guided@mmtm", "uniform@concat"]
    guided, uniform = d["cures"]
    assert guided["vs_vanilla"]["verdict"] == "holds" and guided["vs_vanilla"]["ci"] == pytest.approx(
        [0.006 - t_quantile(0.975, 2) * 0.001 / math.sqrt(3), 0.006 + t_quantile(0.975, 2) * 0.001 / math.sqrt(3)]
    )
    assert [p["better"] for p in guided["per_seed"]] == [True, True, True]
    assert uniform["vs_vanilla"]["verdict"] != "holds" and "vs_vanilla_same_fusion" in uniform
    assert guided["seconds_per_run"]["mean"] == 10.0


def room_records():
    """Three seeds, ten epochs: a is under-used (the joint model keeps little of it), and vanilla sits at 0.90 on
    validation, so a cure has room to show a gain."""
    only_a, only_b = [0.30, 0.35, 0.28], [0.89, 0.88, 0.89]
    out = []
    for s, (a, b) in enumerate(zip(only_a, only_b, strict=True)):
        out += [
            rec("alone", s, [0.70, 0.72, 0.68][s], mods=("a",)),
            rec("alone", s, [0.90, 0.89, 0.91][s], mods=("b",)),  # level with the joint model: not below-alone
            rec("joint", s, 0.90, without={"a": b, "b": a}),
        ]
    return out


def test_no_cure_helps_only_from_cures_that_had_the_evidence_to_show_a_gain():
    """Vanilla at 0.90 on validation (room above it), three seeds, ten epochs: a cure within noise of vanilla, and
    one below it in every seed, give "no cure helps". Two seeds of the same cure give "cannot judge" instead."""
    recs = room_records()
    tie = [rec("cure", s, v, method="guided") for s, v in enumerate([0.905, 0.895, 0.901])]
    worse = [rec("cure", s, v, method="uniform", fusion="concat") for s, v in enumerate([0.80, 0.82, 0.81])]
    d = rules.diagnose_records(recs + tie + worse, ["a", "b"], num_classes=4)
    assert d["under_used"] == ["a"] and d["verdict"] == rules.NO_CURE_HELPS and d["cannot_judge_because"] == []
    by = {c["label"]: c["vs_vanilla"] for c in d["cures"]}
    assert by["guided@mmtm"]["verdict"] == "cannot judge"  # diffs +0.005, -0.005, +0.001: interval around 0
    assert by["uniform@concat"]["verdict"] == "does not hold"  # 0.09 below in every seed
    d = rules.diagnose_records(recs + tie[:2], ["a", "b"], num_classes=4)
    assert d["verdict"] == rules.GREEDY_CANNOT_JUDGE
    assert d["cannot_judge_because"] == ["guided@mmtm: n=2 < 3 seeds"]


def test_a_cure_on_another_fusion_must_also_beat_vanilla_on_that_fusion():
    """Vanilla MMTM at 0.90; vanilla on concat at 0.95; uniform@concat at 0.95 too: it beats the joint model only
    as much as the fusion does, so it is not recommended and the reason names the fusion. At 0.97 (above vanilla
    on concat in every seed) it is."""
    recs = room_records() + [rec("reference", s, v, fusion="concat") for s, v in enumerate([0.950, 0.948, 0.952])]
    same = [rec("cure", s, v, method="uniform", fusion="concat") for s, v in enumerate([0.951, 0.947, 0.952])]
    d = rules.diagnose_records(recs + same, ["a", "b"], num_classes=4)
    cure = d["cures"][0]
    assert cure["vs_vanilla"]["verdict"] == "holds"  # +0.05 over vanilla MMTM in every seed
    assert cure["vs_vanilla_same_fusion"]["verdict"] == "cannot judge"  # +0.001, -0.001, 0.000 over vanilla concat
    assert d["verdict"] == rules.GREEDY_CANNOT_JUDGE and d["recommendation"] is None
    assert d["cannot_judge_because"][0].startswith("uniform@concat beats vanilla, but not vanilla on concat")
    better = [rec("cure", s, v, method="uniform", fusion="concat") for s, v in enumerate([0.970, 0.969, 0.972])]
    d = rules.diagnose_records(recs + better, ["a", "b"], num_classes=4)
    assert d["verdict"] == rules.CURE_HELPS and d["recommendation"]["method"] == "uniform"


def test_two_equally_used_modalities_are_not_greedy():
    recs = []
    for s in (0, 1, 2):
        recs += [rec("alone", s, 0.70, mods=("a",)), rec("alone", s, 0.71, mods=("b",))]
        recs += [rec("joint", s, 0.85 + 0.01 * s, without={"a": 0.60, "b": 0.61})]
    d = rules.diagnose_records(recs, ["a", "b"], num_classes=4)
    assert d["verdict"] == rules.NOT_GREEDY and d["under_used"] == [] and d["recommendation"] is None
    assert d["cannot_judge_because"] == []  # the key is always there (docs/DIAGNOSE.md section 6)
    assert not any(r["fired"] for r in d["rules"])
    assert d["joint"]["beats_best_alone"]["verdict"] == "holds"


def test_near_chance_no_rule_fires_and_it_says_so():
    recs = []
    for s in (0, 1, 2):
        recs += [rec("alone", s, 0.60, mods=("a",)), rec("alone", s, 0.27, mods=("b",))]
        recs += [rec("joint", s, 0.27, without={"a": 0.27, "b": 0.26})]  # a is informative, u(a) = 0
    d = rules.diagnose_records(recs, ["a", "b"], num_classes=4)
    assert d["verdict"] == rules.NOT_GREEDY and not d["joint_learned"]
    assert "near-chance" in {w["kind"] for w in d["warnings"]}


def test_warnings_warmup_few_seeds_few_epochs_validation_and_budget():
    recs = greedy_records(seeds=(0, 1), epochs=3)
    recs += [rec("cure", s, 0.995, method="guided", sel=0, warmup=1.0, epochs=3) for s in (0, 1)]
    d = rules.diagnose_records(recs, ["a", "b"], num_classes=4, skipped=["cure guided@mmtm on all, seed 2"])
    kinds = {w["kind"]: w["text"] for w in d["warnings"]}
    assert set(kinds) == {
        "warmup", "few-seeds", "few-epochs", "cannot-separate", "validation-like-training", "budget", "saturated"
    }  # fmt: skip
    assert "reaches 0.990 on validation" in kinds["saturated"]
    assert "guided@mmtm seed 0 (epoch 0)" in kinds["warmup"]
    assert "n=2 < 3 seeds" in kinds["cannot-separate"] and "3 epochs trained < 5" in kinds["cannot-separate"]
    assert d["verdict"] == rules.GREEDY_CANNOT_JUDGE  # the cure cannot be separated from vanilla on two seeds
    assert any(b.startswith("guided@mmtm: n=2 < 3 seeds, 3 epochs trained < 5") for b in d["cannot_judge_because"])
    # the last-epoch numbers travel with the cure
    assert d["cures"][0]["last_val"]["mean"] == pytest.approx(0.995)


def test_test_accuracy_far_below_validation_is_a_warning_that_changes_no_verdict():
    # as on full CG-MNIST: validation shares the training colours, test does not; the joint model (val 0.99, test
    # 0.60) is far below a alone on test (0.95); b alone is not (0.70: 0.10 above the joint model, within 0.15)
    recs = greedy_records()
    for r in recs:
        r["test_acc"] = {("a",): 0.95, ("b",): 0.70}.get(tuple(r["modalities"]), 0.60)
    d = rules.diagnose_records(recs, ["a", "b"], num_classes=4)
    text = {w["kind"]: w["text"] for w in d["warnings"]}["test-differs"]
    assert text.startswith("the joint model reaches 0.990 on validation and 0.600 on test: the test data differ")
    assert "On test a alone (0.950) is far above the joint model" in text and "b alone" not in text
    # the verdict and the under-used modality are those of the same records with test numbers like validation's
    same = rules.diagnose_records(greedy_records(), ["a", "b"], num_classes=4)
    assert (d["verdict"], d["under_used"]) == (same["verdict"], same["under_used"])
    assert "test-differs" not in {w["kind"] for w in same["warnings"]}  # 0.99 -> 0.89: 0.10, within the 0.15 line


def test_a_joint_model_below_a_modality_alone_under_uses_it_and_a_modality_it_gains_without_is_not_ignored():
    """As cg-digits with validation drawn like test (random colours): a (gray) alone reaches 0.98, b (colored, its
    shortcut broken on validation) 0.22; the joint model 0.28, and 0.31 with b at its training mean (u_b = -0.107),
    0.10 with a at its training mean. By hand, ten classes (chance 0.1): a alone - joint = 0.70 in every seed (line
    0.02): below-alone names a. b is not "ignored" (its u is not within +-5%); the warning "misleading" names it."""
    recs = []
    for s in (0, 1, 2):
        recs += [
            rec("alone", s, 0.98, mods=("a",)),
            rec("alone", s, 0.22, mods=("b",)),
            rec("joint", s, 0.28, without={"a": 0.10, "b": 0.31}),
        ]
    d = rules.diagnose_records(recs, ["a", "b"], num_classes=10)
    fired = {(r["rule"], r["modality"]) for r in d["rules"] if r["fired"]}
    assert ("below-alone", "a") in fired and ("ignored", "b") not in fired
    below = next(r for r in d["rules"] if r["rule"] == "below-alone" and r["modality"] == "a")
    assert below["numbers"]["alone_minus_joint"] == pytest.approx(0.70) and below["numbers"]["lower_in_every_seed"]
    assert "a" in d["under_used"] and d["balancing_warranted"]
    misleading = {w["kind"]: w["text"] for w in d["warnings"]}["misleading"]
    assert misleading.startswith("the joint model's validation accuracy rises by 10.7% when b is replaced")
    # one seed: "in every seed" needs two, as for the under-trained rule
    one = rules.diagnose_records([r for r in recs if r["seed"] == 0], ["a", "b"], num_classes=10)
    assert not any(r["fired"] for r in one["rules"] if r["rule"] == "below-alone")
    # a cure that gains 0.14 in every seed is recommended, and a alone (0.98) is still far above it: "alone-best"
    cured = recs + [rec("cure", s, 0.42, method="guided") for s in (0, 1, 2)]
    d = rules.diagnose_records(cured, ["a", "b"], num_classes=10)
    assert d["verdict"] == rules.CURE_HELPS and d["recommendation"]["method"] == "guided"
    best = {w["kind"]: w["text"] for w in d["warnings"]}["alone-best"]
    assert best.startswith("a alone (0.980 on validation) is above the joint model and every cure tried (the best of "
                           "them: guided@mmtm, 0.420)")  # fmt: skip
    assert "alone-best" not in {w["kind"] for w in rules.diagnose_records(greedy_records(), ["a", "b"], 4)["warnings"]}
    from greedymm.diagnose.page import headline

    assert headline(d).endswith(
        "use guided (fusion=mmtm); but a alone beats the joint model and every cure on validation: use it alone"
    )


def test_without_a_joint_run_the_budget_is_named():
    recs = [r for r in greedy_records() if r["role"] == "alone"]
    with pytest.raises(ValueError, match="no finished joint"):
        rules.diagnose_records(recs, ["a", "b"], num_classes=4)


# -- the report page -----------------------------------------------------------------------------------------------
def _hand_diagnosis():
    recs = greedy_records()
    recs += [rec("cure", s, 0.99 + d, method="guided") for s, d in zip((0, 1, 2), (0.005, 0.007, 0.006), strict=True)]
    for r in recs:
        if r["role"] == "joint":
            r["speed"]["curve"] = {"a": [0.1, 0.2, 0.3], "b": [0.5, 0.9, 1.2]}
    return rules.diagnose_records(recs, ["a", "b"], num_classes=4), recs


def test_the_page_puts_the_verdict_first_then_evidence_then_every_run(tmp_path):
    d, recs = _hand_diagnosis()
    md, page = write_page(d, recs, tmp_path)
    text = md.read_text()
    assert text.index("Verdict: greedy-cure-helps: a under-used; use guided") < text.index("## Evidence")
    assert text.index("## Evidence") < text.index("## Every run") < text.index("runs/cure_guided_2")
    assert (tmp_path / "figures" / "accuracy.png").is_file() and "![accuracy](figures/accuracy.png)" in text
    html = page.read_text()
    assert html.count("data:image/png;base64,") == 4  # accuracy, utilization, speed, robustness: embedded
    assert "<script" not in html and "Verdict: <b>greedy-cure-helps" in html
    assert "&lt;b&gt;" in to_html([("p", "<b>")])  # text is escaped


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


@pytest.mark.process
def test_the_html_page_renders_in_a_headless_browser(tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium found (Debian: apt-get install chromium); the check is documented in docs/DIAGNOSE.md")
    d, recs = _hand_diagnosis()
    _, page = write_page(d, recs, tmp_path)
    shot = tmp_path / "shot.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--screenshot={shot}",
           "--window-size=1200,2400", page.as_uri()]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    from PIL import Image

    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 2400)
    colors = img.getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50  # text, tables and figures, not a blank or error page
    # the verdict box's background (#eef4ff) is drawn near the top
    top = img.crop((0, 0, 1200, 300))
    assert any(c == (238, 244, 255) for _, c in top.getcolors(maxcolors=1 << 20))


# -- the protocol on data ------------------------------------------------------------------------------------------
SYNTH = {"size": 800, "test_size": 200, "image_size": 8, "classes": 4, "signal": [0.3, 0.3]}
FAST = {"fusion": "concat", "width": 1.0, "val_fraction": 0.25, "batch_size": 32, "lr": 3e-3, "device": "cpu"}


@pytest.mark.slow
def test_a_shortcut_in_one_modality_makes_the_other_under_used(tmp_path):
    lines = []
    d = greedymm.diagnose(
        "synthetic", out=tmp_path, seeds=(0, 1), epochs=3, cures=[], echo=lines.append,
        data_options={**SYNTH, "shortcut": 1}, **FAST,
    )  # fmt: skip
    assert d.under_used == ["m0"] and d.numbers["balancing_warranted"]
    assert d.verdict == rules.GREEDY_CANNOT_JUDGE and "no-cures" in {w["kind"] for w in d.numbers["warnings"]}
    saved = json.loads(d.json_path.read_text())
    assert saved["verdict"] == d.verdict and saved["under_used"] == ["m0"] and saved["recommendation"] is None
    assert "under-trained" in saved["modalities"]["m0"]["under_used_by"]
    assert d.html_path.is_file() and d.markdown_path.is_file()
    assert any(line.startswith("[6/6] joint vanilla@concat on all, seed 1") for line in lines)
    assert any("epoch 3/3: val" in line for line in lines)
    # the same call again reuses the six finished runs (more seeds or cures later would train only the new ones)
    lines.clear()
    greedymm.diagnose("synthetic", out=tmp_path, seeds=(0, 1), epochs=3, cures=[], echo=lines.append,
                      data_options={**SYNTH, "shortcut": 1}, **FAST)  # fmt: skip
    assert lines[0] == "diagnose: 6 runs, 6 finished earlier, 0 to train"


@pytest.mark.slow
def test_two_equally_informative_modalities_without_a_shortcut_are_not_greedy(tmp_path):
    d = greedymm.diagnose("synthetic", out=tmp_path, seeds=(0, 1), epochs=3, cures=["guided"], echo=None,
                          data_options=SYNTH, **FAST)  # fmt: skip
    assert d.verdict == rules.NOT_GREEDY and d.under_used == [] and d.recommendation is None
    assert not any(r["role"] == "cure" for r in d.records)  # no cure is tried when none is warranted
    assert all(0.5 < r["val_acc"] for r in d.records if r["role"] == "joint")


class CrossAttention(nn.Module):
    """A model greedymm did not build: one token per modality, cross-attention between them, a head on the mean."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.enc0 = nn.Sequential(nn.Flatten(), nn.Linear(64, dim), nn.ReLU())
        self.enc1 = nn.Sequential(nn.Flatten(), nn.Linear(64, dim), nn.ReLU())
        self.attn = nn.MultiheadAttention(dim, num_heads=2, batch_first=True)
        self.head = nn.Linear(dim, 4)

    def forward(self, x):
        tokens = torch.stack([self.enc0(x["m0"]), self.enc1(x["m1"])], dim=1)  # (B, 2, dim)
        mixed, _ = self.attn(tokens, tokens, tokens)
        return self.head(mixed.mean(1))


def test_a_model_with_its_own_fusion_gets_utilization_and_speeds(tmp_path):
    data_opts = {"size": 400, "test_size": 100, "image_size": 8, "classes": 4, "signal": [0.3, 0.3], "shortcut": 1}
    from greedymm.config import resolve_config
    from greedymm.run import load_data

    data = load_data(resolve_config("synthetic", data_options=data_opts))
    lines = []
    d = greedymm.diagnose(
        data, model=CrossAttention, out=tmp_path, seeds=(0, 1), epochs=2, lr=3e-3, batch_size=32,
        groups={"m0": "enc0", "m1": "enc1", "fusion": ["attn", "head"]}, fusion_group="fusion",
        at={"m0": "enc0", "m1": "enc1"}, echo=lines.append,
    )  # fmt: skip
    joint = [r for r in d.records if r["role"] == "joint"]
    assert len(joint) == 2
    for r in joint:
        assert set(r["util"]) == {"m0", "m1"} and all(math.isfinite(v) for v in r["util"].values())
        assert r["ablation"] == {"fill": "mean", "at": {"m0": "enc0", "m1": "enc1"}}
        sp = r["speed"]
        assert sp["values"]["m0"] > 0 and sp["values"]["m1"] > 0 and sp["slowest"] in ("m0", "m1")
        assert set(sp["s"]) == {"m0", "m1"} and math.isfinite(sp["d_speed"])
        assert sp["d_speed"] == pytest.approx(math.log10(sp["values"]["m1"] / sp["values"]["m0"]))
        assert len(sp["curve"]["m0"]) == 2
    # the default cures for a user's model: uniform and mmpareto need heads this model lacks (named, not silently
    # skipped); agm needs none. The plan says so whatever the first runs find (nothing trains for it); the
    # diagnosis says the same when it goes on to the cures.
    p = greedymm.diagnose.plan(
        data, model=CrossAttention, out=tmp_path, seeds=(0, 1), epochs=2, lr=3e-3, batch_size=32,
        groups={"m0": "enc0", "m1": "enc1", "fusion": ["attn", "head"]}, fusion_group="fusion",
        at={"m0": "enc0", "m1": "enc1"}, echo=None,
    )  # fmt: skip
    refused = {r["cure"]: r["reason"] for r in p["cures_refused"]}
    assert set(refused) == {"uniform", "mmpareto"} and all("no heads" in why for why in refused.values())
    assert any(line.startswith("then, only if a modality turns out under-used, the cures (agm)") for line in p["lines"])
    if d.numbers["balancing_warranted"]:
        assert d.numbers["cures_refused"] == p["cures_refused"]
        assert [c["label"] for c in d.numbers["cures"]] == ["agm"]
    assert d.verdict in rules.VERDICTS
    assert json.loads(d.json_path.read_text())["setup"]["engine"] == "model"
    # again with a third seed and a budget below what the finished runs recorded: nothing new starts
    lines = []
    d = greedymm.diagnose(
        data, model=CrossAttention, out=tmp_path, seeds=(0, 1, 2), epochs=2, lr=3e-3, batch_size=32, cures=[],
        groups={"m0": "enc0", "m1": "enc1", "fusion": ["attn", "head"]}, fusion_group="fusion",
        at={"m0": "enc0", "m1": "enc1"}, echo=lines.append, max_minutes=1e-6,
    )  # fmt: skip
    assert not any(line.startswith("[1/") for line in lines)
    assert any(line.startswith("diagnose: the budget left out 3 runs: ") for line in lines) and len(d.records) == 6
    # the plan for the same call names the six finished runs and the three a third seed needs, and writes nothing
    before = sorted((f, f.stat().st_mtime_ns) for f in tmp_path.rglob("*"))
    p = greedymm.diagnose.plan(
        data, model=CrossAttention, out=tmp_path, seeds=(0, 1, 2), epochs=2, lr=3e-3, batch_size=32, cures=[],
        groups={"m0": "enc0", "m1": "enc1", "fusion": ["attn", "head"]}, fusion_group="fusion",
        at={"m0": "enc0", "m1": "enc1"}, echo=None,
    )  # fmt: skip
    assert [r["state"] for r in p["runs"]] == ["finished"] * 6 + ["train"] * 3 and p["to_train"] == [3, 0]
    assert sorted((f, f.stat().st_mtime_ns) for f in tmp_path.rglob("*")) == before


def test_a_built_module_instead_of_a_builder_is_refused(tmp_path):
    from greedymm.config import resolve_config
    from greedymm.run import load_data

    data = load_data(resolve_config("synthetic", data_options={"size": 40, "test_size": 20, "classes": 2}))
    with pytest.raises(TypeError, match="a function that builds a fresh model"):
        greedymm.diagnose(data, model=CrossAttention(), out=tmp_path, echo=None)
    with pytest.raises(ValueError, match="no module 'encoder0'"):
        greedymm.diagnose(data, model=CrossAttention, out=tmp_path, groups={"m0": "encoder0"}, echo=None)


def test_an_unknown_cure_is_refused_before_any_run_trains(tmp_path):
    from greedymm.config import resolve_config
    from greedymm.run import load_data

    data = load_data(resolve_config("synthetic", data_options={"size": 40, "test_size": 20, "classes": 2}))
    with pytest.raises(ValueError, match="nosuchmethod"):
        greedymm.diagnose(data, out=tmp_path, cures=["nosuchmethod"], echo=None)
    with pytest.raises(ValueError, match="unknown fusion 'late'"):
        greedymm.diagnose(data, out=tmp_path, cures=["guided@late"], echo=None)
    assert not any(tmp_path.rglob("*.pt"))  # nothing trained


def test_the_command_line_runs_diagnose(tmp_path, capsys):
    from greedymm.cli import main

    args = ["diagnose", "--dataset", "synthetic", "--epochs", "1", "--seeds", "0", "--cures", "none",
            "--fusion", "concat", "--device", "cpu", "--out", str(tmp_path / "d"),
            "--set", "width=0.25", "batch_size=32", "data.size=200", "data.test_size=40", "data.image_size=8",
            "data.classes=2"]  # fmt: skip
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert not (tmp_path / "d").exists()  # a dry run writes nothing
    assert out[0].startswith("diagnose plan (synthetic; 1 epoch a run; seeds 0): nothing is trained")
    assert [line.split()[-1] for line in out[1:4]] == ["train"] * 3
    assert out[4] == "first: 3 of 3 runs to train, time unknown (no finished run recorded one)"
    code = main(args)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "verdict: " in out and "warning (few-seeds)" in out and "diagnosis.html" in out
    assert (tmp_path / "d" / "diagnosis.json").is_file()
    before = sorted((f, f.stat().st_mtime_ns) for f in (tmp_path / "d").rglob("*"))
    assert main([*args, "--seeds", "0", "1", "--dry-run"]) == 0  # a second seed: three runs finished, three to train
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[-2] for line in out[1:4]] == ["finished"] * 3  # then the folder
    assert [line.split()[-1] for line in out[4:7]] == ["train"] * 3
    assert out[7].startswith("first: 3 of 6 runs to train, about 0:00:")
    assert out[-1].startswith("time per run: 0:00:") and out[-1].endswith(
        "the mean of the 3 finished or reusable runs' records"
    )
    assert sorted((f, f.stat().st_mtime_ns) for f in (tmp_path / "d").rglob("*")) == before


class FakeClock:
    now = 1000.0

    def time(self):
        return self.now


class FakeEngine(Engine):
    """Records what the protocol asks to train; every run takes 50 s on the fake clock."""

    epochs = 2

    def __init__(self, clock, finished=()):
        self.clock, self.done, self.trained = clock, set(finished), []

    def folder(self, spec):
        return f"runs/{spec.role}-{spec.seed}"

    def finished(self, spec):
        return spec in self.done

    def train(self, spec, echo):
        self.clock.now += 50.0
        self.trained.append(spec)
        self.done.add(spec)


def test_the_budget_starts_no_run_that_would_not_fit_and_names_the_rest(monkeypatch):
    from greedymm.diagnose import protocol
    from greedymm.diagnose.protocol import Budget, RunSpec, execute

    clock = FakeClock()
    monkeypatch.setattr(protocol, "time", clock)
    specs = [RunSpec("alone", "vanilla", None, (m,), s) for s in (0, 1) for m in ("a", "b")]
    engine = FakeEngine(clock, finished=[specs[0]])
    budget = Budget(minutes=2)  # 120 s: the first new run has no estimate and starts; 50 + 50 <= 120: the second
    lines = []
    done, skipped = execute(engine, specs, budget, lines.append)
    assert engine.trained == [specs[1], specs[2]] and done == specs[:3]
    assert skipped == ["alone vanilla on b, seed 1"]  # 100 + 50 > 120
    assert lines[0] == "diagnose: 4 runs, 1 finished earlier, 3 to train"
    assert lines[1] == "[1/3] alone vanilla on b, seed 0: 2 epochs; 0:00:00 elapsed, about unknown left"
    assert lines[3] == "[2/3] alone vanilla on a, seed 1: 2 epochs; 0:00:50 elapsed, about 0:01:40 left"
    assert lines[-1] == "diagnose: the budget left out 1 run: alone vanilla on b, seed 1"
    with pytest.raises(ValueError, match="max-minutes must be > 0"):
        Budget(0)


class TimedEngine(FakeEngine):
    """FakeEngine whose finished runs recorded ``took`` seconds of training."""

    def __init__(self, clock, finished=(), took=0.0):
        super().__init__(clock, finished)
        self.took = took

    def recorded_seconds(self, folder):
        return self.took


def test_the_budget_estimates_from_the_times_finished_runs_recorded_before_training_any(monkeypatch):
    from greedymm.diagnose import protocol
    from greedymm.diagnose.protocol import Budget, RunSpec, execute

    clock = FakeClock()
    monkeypatch.setattr(protocol, "time", clock)
    specs = [RunSpec("alone", "vanilla", None, (m,), s) for s in (0, 1) for m in ("a", "b")]
    # a reused run took 200 s: none of the 3 new runs fits in 120 s, so none starts (without the estimate one would)
    engine = TimedEngine(clock, finished=[specs[0]], took=200.0)
    lines = []
    done, skipped = execute(engine, specs, Budget(minutes=2), lines.append)
    assert engine.trained == [] and done == specs[:1] and len(skipped) == 3
    # it took 40 s: estimate 3 x 40 s before any run; then the runs trained here (50 s each) replace it
    clock.now, lines = 1000.0, []
    engine = TimedEngine(clock, finished=[specs[0]], took=40.0)
    done, skipped = execute(engine, specs, Budget(minutes=2), lines.append)
    assert lines[1] == "[1/3] alone vanilla on b, seed 0: 2 epochs; 0:00:00 elapsed, about 0:02:00 left"
    assert lines[3] == "[2/3] alone vanilla on a, seed 1: 2 epochs; 0:00:50 elapsed, about 0:01:40 left"
    assert engine.trained == [specs[1], specs[2]] and skipped == ["alone vanilla on b, seed 1"]


class RecordEngine(FakeEngine):
    """A fake engine whose runs give hand-made records: a and b equally used (not greedy), and a guided run 0.04
    above vanilla on validation in every seed."""

    modalities = ("a", "b")

    class data:  # noqa: N801 (stands in for MultiModalData)
        num_classes = 4

    def record(self, spec):
        if spec.role == "alone":
            return rec("alone", spec.seed, 0.70 if spec.modalities == ("a",) else 0.71, mods=spec.modalities)
        if spec.role == "joint":
            return rec("joint", spec.seed, 0.85 + 0.01 * spec.seed, without={"a": 0.60, "b": 0.61})
        return rec(spec.role, spec.seed, 0.89 + 0.01 * spec.seed + 0.001 * spec.seed**2, method=spec.method)


class PlanEngine(TimedEngine):
    """A finished run here took ``took`` s; ``elsewhere`` maps specs to a reusable folder that recorded 3 x took."""

    modalities = ("a", "b")

    def __init__(self, clock, finished=(), took=0.0, elsewhere=None):
        super().__init__(clock, finished, took)
        self.elsewhere = dict(elsewhere or {})
        self.data = type("D", (), {"name": "toy"})()

    def reusable(self, spec):
        return self.elsewhere.get(spec)

    def recorded_seconds(self, folder):
        return 3 * self.took if str(folder).startswith("sweep/") else self.took

    def refuses(self, spec):
        return "needs MMTM gates" if spec.method == "random" else None


def test_the_plan_lists_each_run_as_finished_reusable_or_to_train_and_trains_nothing():
    from greedymm.diagnose.protocol import RunSpec, plan_protocol

    joint0 = RunSpec("joint", "vanilla", "mmtm", ("a", "b"), 0)
    alone_b1 = RunSpec("alone", "vanilla", "mmtm", ("b",), 1)
    cure1 = RunSpec("cure", "guided", "mmtm", ("a", "b"), 1)
    engine = PlanEngine(FakeClock(), finished=[joint0], took=60.0, elsewhere={alone_b1: "sweep/b1", cure1: "sweep/g1"})
    p = plan_protocol(engine, seeds=[0, 1], cures=["guided", "uniform@concat", "random"], max_minutes=10,
                      joint_fusion="mmtm")  # fmt: skip
    assert engine.trained == []
    assert [(r["run"], r["state"]) for r in p["runs"]] == [
        ("alone vanilla@mmtm on a, seed 0", "train"),
        ("alone vanilla@mmtm on b, seed 0", "train"),
        ("joint vanilla@mmtm on all, seed 0", "finished"),
        ("alone vanilla@mmtm on a, seed 1", "train"),
        ("alone vanilla@mmtm on b, seed 1", "reuse"),
        ("joint vanilla@mmtm on all, seed 1", "train"),
    ]
    # per seed: vanilla on concat (uniform@concat's reference), then the cures that apply; random is refused
    assert [r["run"] for r in p["cure_runs"]][:3] == [
        "reference vanilla@concat on all, seed 0",
        "cure guided@mmtm on all, seed 0",
        "cure uniform@concat on all, seed 0",
    ]
    assert [r["state"] for r in p["cure_runs"]] == ["train", "train", "train", "train", "reuse", "train"]
    assert p["cures_refused"] == [{"cure": "random", "reason": "needs MMTM gates"}]
    # the estimate: the runs finished here (60 s) and reusable elsewhere (180 s each): (60 + 180 + 180) / 3 = 140 s
    assert p["seconds_per_run"] == pytest.approx(140.0) and p["to_train"] == [4, 5]
    lines = p["lines"]
    assert "first: 4 of 6 runs to train, about 0:09:20" in lines  # 4 x 140 s
    assert "then: 5 of 6 runs to train, about 0:11:40" in lines
    assert lines[-1] == "--max-minutes 10: about 4 runs fit; the rest would be left out"  # 600 // 140
    assert "refused: random: needs MMTM gates" in lines


def test_cures_are_tried_when_no_modality_is_under_used_only_when_asked_and_a_gain_is_named(monkeypatch):
    from greedymm.diagnose import protocol
    from greedymm.diagnose.protocol import run_protocol

    clock = FakeClock()
    monkeypatch.setattr(protocol, "time", clock)
    kw = dict(seeds=[0, 1, 2], cures=["guided"], max_minutes=None, joint_fusion="mmtm")
    engine = RecordEngine(clock)
    d, _ = run_protocol(engine, echo=lambda s: None, **kw)
    assert d["verdict"] == rules.NOT_GREEDY and d["cures"] == []
    assert {s.role for s in engine.trained} == {"alone", "joint"}  # not warranted, not asked: no cure runs
    engine, lines = RecordEngine(clock), []
    d, _ = run_protocol(engine, echo=lines.append, cure_anyway=True, **kw)
    assert [s.seed for s in engine.trained if s.role == "cure"] == [0, 1, 2]
    assert "diagnose: no modality under-used; trying 1 cures anyway" in lines
    # guided - vanilla per seed: +0.040, +0.041, +0.044 (0.89 + 0.01 s + 0.001 s^2 against 0.85 + 0.01 s): holds
    assert d["verdict"] == rules.NOT_GREEDY and d["recommendation"] is None
    (helps,) = [w["text"] for w in d["warnings"] if w["kind"] == "helps-anyway"]
    assert helps.startswith("no modality is under-used by the rules, yet guided@mmtm beats vanilla on validation")
    from greedymm.diagnose.page import headline

    assert headline(d).startswith("not-greedy: no modality is under-used; yet a cure tried anyway helps (no modality")


def test_a_data_set_that_can_draw_validation_like_test_is_named_in_the_warnings_that_ask_for_it(monkeypatch, tmp_path):
    from greedymm.data.base import validation_like_test
    from greedymm.diagnose import protocol
    from greedymm.diagnose.protocol import run_protocol

    assert validation_like_test("cg-mnist") == "data.random_color_val=true"  # the CG sets declare theirs
    assert validation_like_test("cg-digits") == "data.random_color_val=true" and validation_like_test("mfeat") is None
    monkeypatch.setattr(protocol, "time", FakeClock())
    kw = dict(seeds=[0, 1, 2], cures=["guided"], max_minutes=None, joint_fusion="mmtm", cure_anyway=True)
    engine = RecordEngine(FakeClock())
    engine.validation_hint = lambda: "data.random_color_val=true"
    d, _ = run_protocol(engine, echo=lambda s: None, **kw)
    (text,) = [w["text"] for w in d["warnings"] if w["kind"] == "validation-like-training"]
    assert text.endswith("(this data set: --set data.random_color_val=true draws its validation split as its test "
                         "split is drawn)")  # fmt: skip
    d, _ = run_protocol(RecordEngine(FakeClock()), echo=lambda s: None, **kw)  # a data set without one
    assert not any("this data set" in w["text"] for w in d["warnings"])
    # with that setting given, validation is not drawn like training: that warning is left out
    engine = RecordEngine(FakeClock())
    engine.validation_is_like_test = lambda: True
    d, _ = run_protocol(engine, echo=lambda s: None, **kw)
    assert "validation-like-training" not in {w["kind"] for w in d["warnings"]}
    # greedymm's engine on a CG set: the hint until the setting is given, then validation counts as drawn like test
    plain = protocol.GreedymmEngine("cg-digits", tmp_path, device="cpu")
    assert plain.validation_hint() == "data.random_color_val=true" and not plain.validation_is_like_test()
    shifted = protocol.GreedymmEngine("cg-digits", tmp_path, sets=["data.random_color_val=True"], device="cpu")
    assert shifted.validation_hint() is None and shifted.validation_is_like_test()
    assert protocol._same_item("data.random_color_val=True", "data.random_color_val=true")
    assert not protocol._same_item("data.random_color_val=false", "data.random_color_val=true")


def test_your_data_sets_of_one_name_do_not_share_run_folders():
    from greedymm.config import resolve_config
    from greedymm.diagnose.protocol import data_fingerprint
    from greedymm.run import load_data

    def data(signal):
        opts = {"size": 40, "test_size": 20, "classes": 2, "image_size": 8, "signal": signal}
        return load_data(resolve_config("synthetic", data_options=opts))

    assert data_fingerprint(data([0.3, 0.3])) == data_fingerprint(data([0.3, 0.3]))
    assert data_fingerprint(data([0.3, 0.3])) != data_fingerprint(data([0.3, 0.2]))


@pytest.mark.slow
def test_your_npz_arrays_keep_their_modality_names_through_diagnose(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.arange(120) % 3
    audio = rng.normal(size=(120, 6)) + np.eye(3)[y].repeat(2, axis=1)
    text = rng.normal(size=(120, 4))
    np.savez(tmp_path / "mine.npz", labels=y, audio=audio, text=text)
    d = greedymm.diagnose(f"npz:{tmp_path / 'mine.npz'}", out=tmp_path / "diag", seeds=(0,), epochs=1, cures=[],
                          fusion="concat", width=0.25, batch_size=16, device="cpu", echo=None)  # fmt: skip
    saved = json.loads(d.json_path.read_text())
    assert list(saved["modalities"]) == ["audio", "text"] and saved["setup"]["modalities"] == ["audio", "text"]
    assert {r["modalities"][0] for r in saved["runs"] if r["role"] == "alone"} == {"audio", "text"}
    assert all(p.name.startswith("npz-mine_") for p in (tmp_path / "diag" / "runs").iterdir())
    assert "few-seeds" in {w["kind"] for w in saved["warnings"]}
