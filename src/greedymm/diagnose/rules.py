"""The diagnosis as pure functions of run records: which modality is under-used, by which rule, whether a cure
helps, and the warnings (docs/DIAGNOSE.md, "the rules").

A run record is a plain dict (the protocol builds one per finished run; tests write them by hand)::

    {"role": "alone" | "joint" | "cure", "method": "vanilla", "fusion": "mmtm", "modalities": ["audio", "text"],
     "seed": 0, "epochs": 10, "selected_epoch": 4, "last_epoch": 9, "warmup_epochs": 1.0 (methods with a warm-up),
     "val_acc": .., "test_acc": .., "last_val_acc": .., "last_test_acc": .., "seconds": ..,
     "util": {modality: u} (joint and cure runs: the validation accuracy lost with the modality at its training
     mean, relative), "acc_without": {modality: accuracy}, "speed": {"slowest": modality or None, "d_speed": ..,
     "values": {..}, "definition": ..}, "robustness": {"missing": {m: acc}, "noise": {m: {level: acc}}},
     "settings": {..}, "folder": ".."}

Everything is decided on validation numbers; test numbers are carried along for the report only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..report.evidence import CANNOT_JUDGE, CHANCE_MARGIN, HOLDS, MIN_N, Comparison, against, compare
from ..rundir import mean, std

NOT_GREEDY = "not-greedy"
CURE_HELPS = "greedy-cure-helps"
NO_CURE_HELPS = "greedy-no-cure-helps"
GREEDY_CANNOT_JUDGE = "greedy-cannot-judge"
VERDICTS = (NOT_GREEDY, CURE_HELPS, NO_CURE_HELPS, GREEDY_CANNOT_JUDGE)

INFORMATIVE = 0.1  # a modality alone gets at least this share of the way from chance to 100% validation accuracy
IGNORED = 0.05  # the joint model's accuracy moves by less than this share without the modality
BELOW_ALONE = 0.02  # the joint model's validation accuracy this far below the modality's alone (and in every seed)
SHARE_RATIO = 0.5  # use per unit of information below half of another modality's
SATURATED = 0.98  # validation accuracy of the joint model with no room left for a cure to show a gain
TEST_GAP = 0.15  # the joint model's test accuracy this far below its validation accuracy: the test data differ
MIN_EPOCHS = 5  # fewer epochs: a warning (early training may not show what the end of training does)
WARMUP_METHODS = ("guided", "random")  # methods that train as vanilla until warmup_epochs have passed


def _finite(xs: Sequence[float]) -> list[float]:
    return [float(x) for x in xs if x is not None and math.isfinite(float(x))]


def stats(values: Sequence[float]) -> dict[str, Any]:
    """{"mean", "std" (n - 1), "n", "values"}; NaN mean without finite values."""
    v = _finite(values)
    return {"mean": mean(v), "std": std(v), "n": len(v), "values": [float(x) for x in values]}


def interval(values: Sequence[float]) -> tuple[float, float]:
    """The 95% Student-t interval of the mean over seeds (NaN ends with fewer than two values)."""
    v = _finite(values)
    if len(v) < 2:
        return (math.nan, math.nan)
    return against(v, 0.0, min_n=1).ci


def comparison_dict(c: Comparison) -> dict[str, Any]:
    return {
        "verdict": c.verdict,
        "mean_diff": c.mean_diff,
        "ci": list(c.ci),
        "n": c.n,
        "wins": c.wins,
        "losses": c.losses,
        "ties": c.ties,
        "reasons": list(c.reasons),
        "text": c.text(),
    }


def _by_seed(records: Sequence[Mapping[str, Any]], key: str = "val_acc") -> dict[int, float]:
    return {int(r["seed"]): float(r.get(key, math.nan)) for r in records}


def _paired(a: Mapping[int, float], b: Mapping[int, float]) -> tuple[list[int], list[float], list[float]]:
    seeds = sorted(set(a) & set(b))
    return seeds, [a[s] for s in seeds], [b[s] for s in seeds]


def _label(r: Mapping[str, Any]) -> str:
    fusion = r.get("fusion")
    return f"{r['method']}@{fusion}" if fusion else str(r["method"])


def diagnose_records(
    records: Sequence[Mapping[str, Any]],
    modalities: Sequence[str],
    num_classes: int,
    *,
    min_epochs: int = MIN_EPOCHS,
    skipped: Sequence[str] = (),
) -> dict[str, Any]:
    """The diagnosis of the runs in ``records`` (see the module docstring): verdict, under-used modalities, the
    recommendation, the numbers every rule used, and the warnings. ``skipped``: runs the budget left out."""
    modalities = list(modalities)
    chance = 1.0 / num_classes
    alone = {m: [r for r in records if r["role"] == "alone" and list(r["modalities"]) == [m]] for m in modalities}
    joint = [r for r in records if r["role"] == "joint"]
    if not joint:
        raise ValueError("no finished joint (vanilla) run to diagnose; give the protocol more time (--max-minutes)")
    epochs = min(int(r["epochs"]) for r in records)
    seeds = sorted({int(r["seed"]) for r in joint})
    joint_val = _by_seed(joint)
    out: dict[str, Any] = {
        "chance": chance,
        "seeds": seeds,
        "epochs": epochs,
        "modalities": {},
        "rules": [],
        "warnings": [],
    }

    # per modality: alone against what the joint model gets from it
    info: dict[str, float] = {}
    use: dict[str, list[float]] = {}
    for m in modalities:
        a_val = _by_seed(alone[m])
        u = {int(r["seed"]): float(r["util"][m]) for r in joint if m in r.get("util", {})}
        drop = [float(r["val_acc"]) - float(r["acc_without"][m]) for r in joint if m in r.get("acc_without", {})]
        a_stats = stats(list(a_val.values()))
        info[m] = (a_stats["mean"] - chance) / (1 - chance) if a_stats["n"] else math.nan
        use[m] = [u[s] for s in sorted(u)]
        out["modalities"][m] = {
            "alone_val": a_stats,
            "alone_test": stats([r["test_acc"] for r in alone[m]]),
            "alone_last_test": stats([r.get("last_test_acc", math.nan) for r in alone[m]]),
            "information": info[m],
            "informative": bool(info[m] >= INFORMATIVE),
            "u": {**stats(use[m]), "ci": list(interval(use[m]))},
            "drop": stats(drop),
            "under_used_by": [],
        }

    # no rule fires on a joint model near chance: its utilization says nothing
    learned = stats(list(joint_val.values()))["mean"] - chance > CHANCE_MARGIN
    out["joint_learned"] = bool(learned)

    # rule 1, "ignored": informative alone, and the joint model's accuracy barely moves without it (a modality whose
    # removal raises the accuracy is relied on, not ignored: the warning "misleading")
    for m in modalities:
        mu = stats(use[m])["mean"]
        fired = bool(learned and info[m] >= INFORMATIVE and -IGNORED < mu < IGNORED)
        numbers = {
            "information": info[m],
            "u_mean": mu,
            "u_ci": list(interval(use[m])),
            "informative": INFORMATIVE,
            "ignored_below": IGNORED,
        }
        text = (
            f"{m} alone reaches {out['modalities'][m]['alone_val']['mean']:.3f} validation accuracy "
            f"({info[m]:.0%} of the way from chance to 100%); the joint model loses {mu:.1%} of its accuracy "
            f"without it (rule: the first >= {INFORMATIVE:.0%} and the second within +-{IGNORED:.0%})"
        )
        out["rules"].append({"rule": "ignored", "modality": m, "fired": fired, "numbers": numbers, "text": text})

    # rule 2, "under-trained": the joint model's own path through the modality (every other modality at its
    # training mean) keeps less than half the share of what the modality learns alone that another modality's
    # path keeps, and less in every seed
    kept = {m: _kept(alone[m], joint, m, chance) for m in modalities}
    for m in modalities:
        out["modalities"][m]["kept"] = stats(list(kept[m].values()))
        out["modalities"][m]["only"] = stats([r["acc_only"][m] for r in joint if m in r.get("acc_only", {})])
    for m in modalities:
        entries = []
        for k in modalities:
            if k == m or not (info[m] >= INFORMATIVE and info[k] >= INFORMATIVE):
                continue
            seeds_mk, km, kk = _paired(kept[m], kept[k])
            mean_m, mean_k = stats(km)["mean"], stats(kk)["mean"]
            c = compare(kk, km, paired=True)
            every = len(seeds_mk) >= 2 and c.wins == len(seeds_mk)
            fired = bool(learned and mean_k > 0 and mean_m < SHARE_RATIO * mean_k and every)
            entries.append(
                {
                    "rule": "under-trained",
                    "modality": m,
                    "fired": fired,
                    "numbers": {
                        "against": k,
                        "kept": mean_m,
                        "other_kept": mean_k,
                        "ratio_below": SHARE_RATIO,
                        "seeds": seeds_mk,
                        "lower_in_every_seed": every,
                        "comparison": comparison_dict(c),
                    },
                    "text": f"with only {m} left, the joint model keeps {mean_m:.2f} of what {m} alone reaches above "
                    f"chance; with only {k} left it keeps {mean_k:.2f} of {k}'s (rule: below {SHARE_RATIO:g} x the "
                    f"other's and lower in every seed: {'yes' if every else 'no'}; over seeds: {c.verdict})",
                }
            )
        if entries:  # the one that fired, else the most telling (the other modality kept most)
            out["rules"].append(max(entries, key=lambda e: (e["fired"], _nan_low(e["numbers"]["other_kept"]))))

    # rule 3, "below-alone": the joint model reaches less on validation than the modality alone does, by more than
    # BELOW_ALONE and in every seed: it fails to get from its inputs what this one input alone gives
    for m in modalities:
        seeds_m, jm, am = _paired(joint_val, _by_seed(alone[m]))
        if not (info[m] >= INFORMATIVE and seeds_m):
            continue
        gap = stats([a - j for a, j in zip(am, jm, strict=True)])["mean"]
        every = len(seeds_m) >= 2 and all(j < a for j, a in zip(jm, am, strict=True))
        fired = bool(learned and gap > BELOW_ALONE and every)
        out["rules"].append(
            {
                "rule": "below-alone",
                "modality": m,
                "fired": fired,
                "numbers": {
                    "alone_minus_joint": gap,
                    "line": BELOW_ALONE,
                    "seeds": seeds_m,
                    "lower_in_every_seed": every,
                },
                "text": f"{m} alone reaches {stats(am)['mean']:.3f} on validation, the joint model "
                f"{stats(jm)['mean']:.3f} ({gap:+.3f}; rule: {m} alone more than {BELOW_ALONE:g} above, and the "
                f"joint model lower in every seed: {'yes' if every else 'no'})",
            }
        )

    for r in out["rules"]:
        if r["fired"]:
            out["modalities"][r["modality"]]["under_used_by"].append(r["rule"])
    under = [m for m in modalities if out["modalities"][m]["under_used_by"]]

    # fusion against the best single modality (evidence, not a rule)
    best_alone = max(modalities, key=lambda m: _nan_low(out["modalities"][m]["alone_val"]["mean"]))
    _, jv, bv = _paired(joint_val, _by_seed(alone[best_alone]))
    c = compare(jv, bv, paired=True, chance=chance, epochs=epochs, min_epochs=min_epochs)
    out["joint"] = {
        "val": stats([r["val_acc"] for r in joint]),
        "test": stats([r["test_acc"] for r in joint]),
        "last_val": stats([r.get("last_val_acc", math.nan) for r in joint]),
        "last_test": stats([r.get("last_test_acc", math.nan) for r in joint]),
        "best_alone": best_alone,
        "beats_best_alone": comparison_dict(c),
    }

    # the speeds: which modality learns slowest, per seed (evidence)
    slowest = [r.get("speed", {}).get("slowest") for r in joint]
    out["speed"] = {
        "slowest_per_seed": slowest,
        "definition": next((r["speed"].get("definition") for r in joint if r.get("speed")), None),
        "d_speed": stats([r.get("speed", {}).get("d_speed", math.nan) for r in joint]),
        "agrees_with_under_used": [s in under for s in slowest if s is not None] if under else [],
    }
    out["robustness"] = _robustness(joint, modalities)

    # the cures
    cures = _cures(records, joint_val, chance, epochs, min_epochs)
    out["cures"] = cures
    helping = _helping(cures)
    out["cannot_judge_because"] = []  # why the cures could not be judged: filled for greedy-cannot-judge only
    if not under:
        verdict, rec = NOT_GREEDY, None
    elif helping:
        pick = max(helping, key=lambda c: c["val"]["mean"])
        verdict = CURE_HELPS
        rec = {
            "method": pick["method"],
            "fusion": pick["fusion"],
            "settings": pick["settings"],
            "val_acc": pick["val"]["mean"],
            "vs_vanilla": pick["vs_vanilla"]["text"],
        }
    else:
        blockers = _cure_blockers(cures, out["joint"]["val"]["mean"])
        verdict, rec = (GREEDY_CANNOT_JUDGE if blockers else NO_CURE_HELPS), None
        out["cannot_judge_because"] = blockers
    out.update(verdict=verdict, under_used=under, balancing_warranted=bool(under), recommendation=rec)
    out["warnings"] = warnings(records, out, min_epochs=min_epochs, skipped=skipped)
    return out


def _cure_blockers(cures: Sequence[Mapping[str, Any]], joint_val: float) -> list[str]:
    """Why the runs cannot say that no cure helps (empty when they can): no cure ran, a cure on another fusion beats
    vanilla but not vanilla on its own fusion, validation is saturated, or a cure's comparison with vanilla fails for
    want of evidence (seeds, epochs, accuracy near chance) rather than because its interval contains 0 or lies
    below it. "No cure helps" is said only from cures that were given the
    evidence to show a gain and did not."""
    out = []
    if not cures:
        out.append("no cure ran")
    for c in cures:
        if c["vs_vanilla"]["verdict"] == HOLDS and not _not_the_fusion(c):
            same = c["vs_vanilla_same_fusion"]
            out.append(
                f"{c['label']} beats vanilla, but not vanilla on {c['fusion']} ({same['verdict']}: {same['text']}): "
                f"the fusion may be what helps; try vanilla@{c['fusion']}"
            )
    if joint_val >= SATURATED:
        out.append(f"vanilla reaches {joint_val:.3f} on validation (>= {SATURATED:g}): no gain could show there")
    for c in cures:
        wanting = [r for r in c["vs_vanilla"]["reasons"] if "interval" not in r]
        if wanting:
            out.append(f"{c['label']}: {', '.join(wanting)}")
    return out


def _helping(cures: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The cures that beat vanilla on validation. A cure on another fusion than the joint model's must also beat
    vanilla on its own fusion: otherwise the fusion, not the method, may be what beats the joint model."""
    return [c for c in cures if c["vs_vanilla"]["verdict"] == HOLDS and _not_the_fusion(c)]


def _not_the_fusion(cure: Mapping[str, Any]) -> bool:
    """True unless the cure ran on another fusion than the joint model's and does not beat vanilla on that fusion."""
    same = cure.get("vs_vanilla_same_fusion")
    return same is None or same["verdict"] == HOLDS


def _kept(alone: Sequence[Mapping[str, Any]], joint: Sequence[Mapping[str, Any]], m: str, chance: float) -> dict:
    """Per seed: (accuracy of the joint model with only m, the others at their means - chance) / (accuracy of m
    alone - chance); left out where m alone is not above chance."""
    a = _by_seed(alone)
    out = {}
    for r in joint:
        s = int(r["seed"])
        if s in a and a[s] - chance > 0 and m in r.get("acc_only", {}):
            out[s] = (float(r["acc_only"][m]) - chance) / (a[s] - chance)
    return out


def _nan_low(x: float) -> float:
    return -math.inf if math.isnan(x) else x


def _robustness(joint: Sequence[Mapping[str, Any]], modalities: Sequence[str]) -> dict[str, Any]:
    missing = {m: stats([r["robustness"]["missing"][m] for r in joint if "robustness" in r]) for m in modalities}
    levels = sorted(
        {float(lv) for r in joint if "robustness" in r for d in r["robustness"]["noise"].values() for lv in d}
    )
    noise = {
        m: {
            str(lv): stats(
                [
                    d[m][k]
                    for r in joint
                    if "robustness" in r
                    for d in [r["robustness"]["noise"]]
                    for k in d.get(m, {})
                    if float(k) == lv
                ]
            )
            for lv in levels
        }
        for m in modalities
    }
    return {"full": stats([r["val_acc"] for r in joint]), "missing": missing, "noise": noise, "levels": levels}


def _cures(
    records: Sequence[Mapping[str, Any]],
    joint_val: Mapping[int, float],
    chance: float,
    epochs: int,
    min_epochs: int,
) -> list[dict[str, Any]]:
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        if r["role"] == "cure":
            groups.setdefault(_label(r), []).append(r)
    same_fusion_vanilla: dict[Any, dict[int, float]] = {}
    for r in records:
        if r["role"] == "reference":  # vanilla on a cure's own fusion
            same_fusion_vanilla.setdefault(r.get("fusion"), {})[int(r["seed"])] = float(r["val_acc"])
    out = []
    for label, rs in groups.items():
        val = _by_seed(rs)
        seeds, a, b = _paired(val, joint_val)
        c = compare(a, b, paired=True, chance=chance, epochs=epochs, min_epochs=min_epochs)
        last = _by_seed(rs, "last_val_acc")
        entry = {
            "label": label,
            "method": rs[0]["method"],
            "fusion": rs[0].get("fusion"),
            "settings": dict(rs[0].get("settings", {})),
            "val": stats(list(val.values())),
            "test": stats([r["test_acc"] for r in rs]),
            "last_val": stats(list(last.values())),
            "last_test": stats([r.get("last_test_acc", math.nan) for r in rs]),
            "per_seed": [
                {"seed": s, "val": val[s], "vanilla_val": joint_val[s], "better": val[s] > joint_val[s]} for s in seeds
            ],
            "vs_vanilla": comparison_dict(c),
            "seconds_per_run": stats([r.get("seconds", math.nan) for r in rs]),
            "folders": [r.get("folder") for r in rs],
        }
        ref = same_fusion_vanilla.get(rs[0].get("fusion"))
        if ref:
            _, a2, b2 = _paired(val, ref)
            entry["vs_vanilla_same_fusion"] = comparison_dict(
                compare(a2, b2, paired=True, chance=chance, epochs=epochs, min_epochs=min_epochs)
            )
        out.append(entry)
    out.sort(key=lambda e: -_nan_low(e["val"]["mean"]))
    for rank, e in enumerate(out, 1):
        e["rank"] = rank
    return out


def warnings(
    records: Sequence[Mapping[str, Any]],
    diagnosis: Mapping[str, Any],
    *,
    min_epochs: int = MIN_EPOCHS,
    skipped: Sequence[str] = (),
) -> list[dict[str, str]]:
    """Every warning that applies: warm-up, near chance, too few seeds or epochs, validation like training, test
    accuracy far below validation accuracy (read from the test numbers the records carry; it changes no verdict), a
    cure that helps although no modality is under-used (cures tried anyway), runs left out by the budget. Each is
    {"kind", "text"} ("alone-best" also names its "modality")."""
    out: list[dict[str, str]] = []
    chance = diagnosis["chance"]
    inside = [
        r
        for r in records
        if r["method"] in WARMUP_METHODS and r.get("warmup_epochs", 0) and r["selected_epoch"] < r["warmup_epochs"]
    ]
    if inside:
        runs = ", ".join(f"{_label(r)} seed {r['seed']} (epoch {r['selected_epoch']})" for r in inside)
        out.append(
            {
                "kind": "warmup",
                "text": f"the selected epoch lies inside the method's warm-up (it trained as vanilla there): {runs}. "
                "Its numbers at that epoch say nothing about the method; see the last-epoch columns, or train longer",
            }
        )
    jv = diagnosis["joint"]["val"]["mean"]
    if not jv - chance > CHANCE_MARGIN:
        out.append(
            {
                "kind": "near-chance",
                "text": f"the joint model's validation accuracy {jv:.3f} lies within {CHANCE_MARGIN:g} of chance "
                f"({chance:.3f}): nothing here can be judged; train longer or check the data",
            }
        )
    if diagnosis["balancing_warranted"] and jv >= SATURATED:
        out.append(
            {
                "kind": "saturated",
                "text": f"the joint model reaches {jv:.3f} on validation: no cure can show a gain above that. A "
                "modality under-used while validation is near-perfect often means validation shares a shortcut with "
                "training; read the last-epoch and test columns, and hold out validation data that differ as your "
                "test data will",
            }
        )
    n = len(diagnosis["seeds"])
    if n < MIN_N:
        out.append(
            {
                "kind": "few-seeds",
                "text": f"{n} seed{'s' if n != 1 else ''}: at least {MIN_N} are needed before any comparison can hold "
                "(--seeds 0 1 2)",
            }
        )
    if diagnosis["epochs"] < min_epochs:
        out.append(
            {
                "kind": "few-epochs",
                "text": f"{diagnosis['epochs']} epochs per run (< {min_epochs}): early training may not show what "
                "the end of training does; raise --epochs",
            }
        )
    judged = [c for c in diagnosis.get("cures", [])]
    if judged and all(c["vs_vanilla"]["verdict"] == CANNOT_JUDGE for c in judged):
        out.append(
            {
                "kind": "cannot-separate",
                "text": "too few seeds or epochs to separate the cures from vanilla: "
                + "; ".join(f"{c['label']}: {', '.join(c['vs_vanilla']['reasons'])}" for c in judged),
            }
        )
    moved = [r for r in records if r["role"] != "alone" and r.get("selected_epoch") != r.get("last_epoch")]
    if moved or judged:
        out.append(
            {
                "kind": "validation-like-training",
                "text": "validation is drawn like training: it cannot see a shift that only the test data has (a "
                "shortcut that breaks at test time looks perfect on validation). The last-epoch numbers are shown "
                "beside the selected ones; where they disagree, trust neither blindly",
            }
        )
    for m, d in diagnosis["modalities"].items():
        mu = d["u"]["mean"]
        if diagnosis["joint_learned"] and math.isfinite(mu) and mu <= -IGNORED:
            out.append(
                {
                    "kind": "misleading",
                    "text": f"the joint model's validation accuracy rises by {-mu:.1%} when {m} is replaced by its "
                    f"training mean: it relies on {m} in a way validation does not reward (a shortcut learnt in "
                    "training that validation does not share?). It is not counted as ignored; look at the other "
                    "modalities' rules",
                }
            )
    best = diagnosis["joint"]["best_alone"]
    best_val = diagnosis["modalities"][best]["alone_val"]["mean"]
    below = [r for r in diagnosis["rules"] if r["rule"] == "below-alone" and r["modality"] == best and r["fired"]]
    rivals = [("the joint model", jv)] + [(c["label"], c["val"]["mean"]) for c in diagnosis.get("cures", [])]
    if below and all(best_val - v > BELOW_ALONE for _, v in rivals):
        top = max(rivals, key=lambda r: _nan_low(r[1]))
        out.append(
            {
                "kind": "alone-best",
                "modality": best,
                "text": f"{best} alone ({best_val:.3f} on validation) is above the joint model and every cure tried "
                f"(the best of them: {top[0]}, {top[1]:.3f}): on this data a model of {best} alone is the one to "
                "use, unless the other modalities are needed for another reason",
            }
        )
    jt = diagnosis["joint"]["test"]["mean"]
    if math.isfinite(jt) and jv - jt > TEST_GAP:
        alone = {m: d["alone_test"]["mean"] for m, d in diagnosis["modalities"].items()}
        above = [m for m, a in alone.items() if math.isfinite(a) and a - jt > TEST_GAP]
        text = (
            f"the joint model reaches {jv:.3f} on validation and {jt:.3f} on test: the test data differ from "
            "validation, and the verdict, made on validation, cannot see how"
        )
        if above:
            who = " and ".join(f"{m} alone ({alone[m]:.3f})" for m in above)
            text += f". On test {who} {'is' if len(above) == 1 else 'are'} far above the joint model: it leans on "
            text += "something that does not carry over to the test data"
        out.append(
            {
                "kind": "test-differs",
                "text": text + ". Reported, never used to decide: if the test data are what the model will meet, hold "
                "out validation data drawn like them and run diagnose again",
            }
        )
    helping = _helping(diagnosis.get("cures", []))
    if helping and not diagnosis["balancing_warranted"]:
        out.append(
            {
                "kind": "helps-anyway",
                "text": "no modality is under-used by the rules, yet "
                + "; ".join(f"{c['label']} beats vanilla on validation ({c['vs_vanilla']['text']})" for c in helping)
                + ": balancing may pay here for another reason than an under-used modality",
            }
        )
    if skipped:
        out.append(
            {
                "kind": "budget",
                "text": f"the time budget left out {len(skipped)} run{'s' if len(skipped) != 1 else ''} "
                f"({', '.join(skipped[:6])}{' ...' if len(skipped) > 6 else ''}); raise --max-minutes and run the same "
                "command again (finished runs are reused)",
            }
        )
    return out
