"""The diagnosis page: the verdict first, then the evidence, then every run's folder; markdown and HTML from one
list of blocks. The HTML page embeds its figures (base64 PNG) and needs nothing beside it; the markdown page links
the same figures, written as PNG files into ``figures/``."""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Block = tuple  # ("h1"|"h2"|"h3"|"p"|"ul"|"table"|"img", ...)

PAGE_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #eee; }
.verdict { font-size: 1.4em; padding: 0.5em 0.8em; border-radius: 6px; background: #eef4ff; border: 1px solid #99b; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def _f(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _ms(s: Mapping[str, Any] | None, digits: int = 3) -> str:
    """mean ± std (n)."""
    if not s or s.get("mean") is None or (isinstance(s["mean"], float) and math.isnan(s["mean"])):
        return "-"
    std = s.get("std")
    sd = "" if std is None or (isinstance(std, float) and math.isnan(std)) else f" ± {std:.{digits}f}"
    return f"{s['mean']:.{digits}f}{sd} (n={s['n']})"


def _ci(ci: Sequence[Any] | None) -> str:
    if not ci or ci[0] is None or (isinstance(ci[0], float) and math.isnan(ci[0])):
        return "n/a"
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


def headline(diag: Mapping[str, Any]) -> str:
    """One line: the verdict, the under-used modalities and the pick (and a modality alone that beats them all)."""
    line = _headline(diag)
    alone = next((w for w in diag.get("warnings", []) if w["kind"] == "alone-best"), None)
    if alone is not None:
        line += f"; but {alone['modality']} alone beats the joint model and every cure on validation: use it alone"
    return line


def _headline(diag: Mapping[str, Any]) -> str:
    v = diag["verdict"]
    if v == "not-greedy":
        anyway = [w for w in diag.get("warnings", []) if w["kind"] == "helps-anyway"]
        if anyway:
            return f"not-greedy: no modality is under-used; yet a cure tried anyway helps ({anyway[0]['text']})"
        return "not-greedy: no modality is under-used by the rules; balancing is not called for"
    under = ", ".join(diag["under_used"])
    if v == "greedy-cure-helps":
        rec = diag["recommendation"]
        settings = ", ".join(f"{k}={val}" for k, val in rec["settings"].items() if val is not None)
        return f"greedy-cure-helps: {under} under-used; use {rec['method']} ({settings})"
    if v == "greedy-cannot-judge":
        why = "; ".join(diag.get("cannot_judge_because", []))
        return f"greedy-cannot-judge: {under} under-used; these runs cannot tell whether a cure helps ({why})"
    return (
        f"greedy-no-cure-helps: {under} under-used; no cure tried beat vanilla on validation, with the seeds and "
        "epochs to show a gain"
    )


def blocks(diag: Mapping[str, Any], records: Sequence[Mapping[str, Any]], figures: Mapping[str, bytes]) -> list[Block]:
    """The page's content, in order."""
    out: list[Block] = [("h1", "Is the model greedy?"), ("verdict", headline(diag))]
    if diag["under_used"]:
        out.append(
            (
                "p",
                "Under-used: "
                + "; ".join(
                    f"{m} (rule: {', '.join(diag['modalities'][m]['under_used_by'])})" for m in diag["under_used"]
                ),
            )
        )
    if diag.get("recommendation"):
        r = diag["recommendation"]
        out.append(
            (
                "p",
                f"Recommendation: {r['method']} on fusion {r['fusion']}, settings {r['settings']}; "
                f"validation {r['val_acc']:.3f}; against vanilla: {r['vs_vanilla']}",
            )
        )
    if diag["warnings"]:
        out += [("h2", "Warnings"), ("ul", [f"{w['kind']}: {w['text']}" for w in diag["warnings"]])]
    out.append(
        (
            "p",
            f"Decided on validation only; test accuracy is reported beside it and never used. Seeds "
            f"{diag['seeds']}, {diag['epochs']} epochs per run, chance {diag['chance']:.3f}.",
        )
    )

    out += [("h2", "Evidence"), ("h3", "Each modality alone, and what the joint model gets from it")]
    rows = []
    for m, d in diag["modalities"].items():
        rows.append(
            [
                m,
                _ms(d["alone_val"]),
                _ms(d["alone_test"]),
                f"{_f(d['u']['mean'])} {_ci(d['u']['ci'])}",
                _ms(d["drop"]),
                _f(d["information"], 2),
                ", ".join(d["under_used_by"]) or "no",
            ]
        )
    out.append(
        (
            "table",
            [
                "modality",
                "alone: val acc",
                "alone: test acc",
                "utilization in the joint model (val, 95% CI)",
                "val acc lost without it",
                "information alone (0 = chance, 1 = perfect)",
                "under-used by",
            ],
            rows,
        )
    )
    if "accuracy" in figures:
        out.append(("img", "accuracy", figures["accuracy"]))
    if "utilization" in figures:
        out.append(("img", "utilization", figures["utilization"]))
    out.append(("h3", "The rules"))
    out.append(
        (
            "table",
            ["rule", "modality", "fired", "what it checked"],
            [[r["rule"], r["modality"], "yes" if r["fired"] else "no", r["text"]] for r in diag["rules"]],
        )
    )
    j = diag["joint"]
    out.append(("h3", "The joint model against the best single modality"))
    out.append(
        (
            "p",
            f"Joint (vanilla): val {_ms(j['val'])}, test {_ms(j['test'])}; last epoch val {_ms(j['last_val'])}, "
            f"test {_ms(j['last_test'])}. Best alone: {j['best_alone']}. Joint > best alone on validation: "
            f"{j['beats_best_alone']['verdict']} ({j['beats_best_alone']['text']}).",
        )
    )
    sp = diag["speed"]
    out.append(("h3", "Learning speed"))
    out.append(
        (
            "p",
            f"Definition: {sp['definition']}. Slowest modality per seed: {sp['slowest_per_seed']}; d_speed "
            f"{_ms(sp['d_speed'])}.",
        )
    )
    if "speed" in figures:
        out.append(("img", "speed", figures["speed"]))
    joint = [r for r in records if r["role"] == "joint"]
    own = [r for r in joint if r.get("model_util")]
    if own:
        keys = sorted({k for r in own for k in r["model_util"] if k != "family"})
        out.append(("h3", "The network's own utilization (its definitions, docs/DESIGN.md section 2)"))
        out.append(
            (
                "p",
                f"Model family: {own[0]['model_util'].get('family')}; the run's modality order is "
                f"m0..m{len(diag['modalities']) - 1} = {', '.join(diag['modalities'])}.",
            )
        )
        out.append(("table", ["seed", *keys], [[r["seed"], *[_f(r["model_util"].get(k)) for k in keys]] for r in own]))
    heads = [r for r in joint if r.get("heads")]
    if heads:
        out.append(("h3", "Per head (validation, input ablation)"))
        rows = []
        for r in heads:
            for k, h in enumerate(r["heads"]):
                rows.append([r["seed"], k, _f(h["acc"]), *[_f(h["u"].get(m)) for m in diag["modalities"]]])
        out.append(("table", ["seed", "head", "accuracy", *[f"u({m})" for m in diag["modalities"]]], rows))
    rob = diag["robustness"]
    out.append(("h3", "Robustness (validation, joint vanilla model)"))
    head = ["modality", "missing (training mean)", *[f"noise {lv:g} x std" for lv in rob["levels"]]]
    out.append(
        (
            "table",
            head,
            [
                [m, _ms(rob["missing"][m]), *[_ms(rob["noise"][m][str(lv)]) for lv in rob["levels"]]]
                for m in diag["modalities"]
            ],
        )
    )
    if "robustness" in figures:
        out.append(("img", "robustness", figures["robustness"]))

    out.append(("h3", "Cures"))
    if diag["cures"]:
        rows = []
        for c in diag["cures"]:
            per = ", ".join(f"s{p['seed']}: {p['val']:.3f} vs {p['vanilla_val']:.3f}" for p in c["per_seed"])
            rows.append(
                [
                    c["rank"],
                    c["label"],
                    _ms(c["val"]),
                    _ms(c["last_val"]),
                    _ms(c["test"]),
                    _ms(c["last_test"]),
                    f"{c['vs_vanilla']['verdict']}: {c['vs_vanilla']['text']}",
                    per,
                    _ms(c["seconds_per_run"], 0),
                ]
            )
        out.append(
            (
                "table",
                [
                    "rank",
                    "cure",
                    "val (selected)",
                    "val (last epoch)",
                    "test (selected)",
                    "test (last epoch)",
                    "better than vanilla? (val, paired)",
                    "per seed: val vs vanilla",
                    "seconds per run",
                ],
                rows,
            )
        )
    elif not diag["balancing_warranted"]:
        out.append(("p", "None tried: no modality is under-used."))
    else:
        out.append(("p", "None ran."))
    for r in diag.get("cures_refused", []):
        out.append(("p", f"Not applicable: {r['cure']}: {r['reason']}"))

    out.append(("h2", "Every run"))
    out.append(
        (
            "table",
            [
                "role",
                "method",
                "modalities",
                "seed",
                "selected epoch",
                "val",
                "test",
                "last val",
                "last test",
                "folder",
            ],
            [
                [
                    r["role"],
                    r["method"] + (f"@{r['fusion']}" if r.get("fusion") else ""),
                    ",".join(r["modalities"]),
                    r["seed"],
                    r["selected_epoch"],
                    _f(r["val_acc"]),
                    _f(r["test_acc"]),
                    _f(r.get("last_val_acc")),
                    _f(r.get("last_test_acc")),
                    r.get("folder", ""),
                ]
                for r in records
            ],
        )
    )
    return out


def _md_table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
    return "\n".join(lines)


def to_markdown(content: Sequence[Block], figure_dir: str = "figures") -> str:
    parts = []
    for b in content:
        kind = b[0]
        if kind == "h1":
            parts.append(f"# {b[1]}")
        elif kind == "h2":
            parts.append(f"## {b[1]}")
        elif kind == "h3":
            parts.append(f"### {b[1]}")
        elif kind == "verdict":
            parts.append(f"**Verdict: {b[1]}**")
        elif kind == "p":
            parts.append(b[1])
        elif kind == "ul":
            parts.append("\n".join(f"- {x}" for x in b[1]))
        elif kind == "table":
            parts.append(_md_table(b[1], b[2]))
        elif kind == "img":
            parts.append(f"![{b[1]}]({figure_dir}/{b[1]}.png)")
    return "\n\n".join(parts) + "\n"


def to_html(content: Sequence[Block], title: str = "greedymm diagnosis") -> str:
    e = html.escape
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{PAGE_CSS}</style>"
        "</head><body>"
    ]
    for b in content:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            parts.append(f"<{kind}>{e(b[1])}</{kind}>")
        elif kind == "verdict":
            parts.append(f"<div class='verdict' id='verdict'>Verdict: <b>{e(b[1])}</b></div>")
        elif kind == "p":
            parts.append(f"<p>{e(b[1])}</p>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{e(x)}</li>" for x in b[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{e(str(h))}</th>" for h in b[1])
            body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in b[2])
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode(b[2]).decode()
            parts.append(f"<img alt='{e(b[1])}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


# -- figures ---------------------------------------------------------------------------------------------------
def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _nan(x: Any) -> float:
    return math.nan if x is None else float(x)


def figures(diag: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> dict[str, bytes]:
    """PNG bytes of the page's figures: accuracy per run kind, utilization with intervals, speeds, robustness."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}
    mods = list(diag["modalities"])
    # accuracy: each modality alone, the joint model, the cures (validation selected; test beside it)
    names = [f"{m} alone" for m in mods] + ["joint (vanilla)"] + [c["label"] for c in diag["cures"]]
    stats = (
        [diag["modalities"][m]["alone_val"] for m in mods] + [diag["joint"]["val"]] + [c["val"] for c in diag["cures"]]
    )
    tests = [diag["modalities"][m]["alone_test"] for m in mods] + [diag["joint"]["test"]]
    tests += [c["test"] for c in diag["cures"]]
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(names)), 3.4))
    xs = range(len(names))
    ax.bar(
        [x - 0.2 for x in xs],
        [_nan(s["mean"]) for s in stats],
        0.4,
        yerr=[_nan(s["std"]) for s in stats],
        label="validation (decides)",
        color="#4c72b0",
    )
    ax.bar(
        [x + 0.2 for x in xs],
        [_nan(s["mean"]) for s in tests],
        0.4,
        yerr=[_nan(s["std"]) for s in tests],
        label="test (reported only)",
        color="#c8c8c8",
    )
    ax.axhline(diag["chance"], ls=":", color="k", lw=1, label="chance")
    ax.set_xticks(list(xs), names, rotation=20, ha="right")
    ax.set_ylabel("accuracy (selected epoch)")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    out["accuracy"] = _png(fig)
    # utilization with its interval, beside what each modality knows alone
    fig, ax = plt.subplots(figsize=(max(4, 1.4 * len(mods)), 3.2))
    u = [diag["modalities"][m]["u"] for m in mods]
    mean = [_nan(x["mean"]) for x in u]
    lo = [m - _nan(x["ci"][0]) if x["ci"][0] is not None else 0 for m, x in zip(mean, u, strict=True)]
    hi = [_nan(x["ci"][1]) - m if x["ci"][1] is not None else 0 for m, x in zip(mean, u, strict=True)]
    xs = range(len(mods))
    ax.bar(
        [x - 0.2 for x in xs],
        mean,
        0.4,
        yerr=[lo, hi],
        label="utilization in the joint model (95% CI)",
        color="#dd8452",
    )
    ax.bar(
        [x + 0.2 for x in xs],
        [_nan(diag["modalities"][m]["information"]) for m in mods],
        0.4,
        label="information alone",
        color="#55a868",
    )
    ax.set_xticks(list(xs), mods)
    ax.axhline(0, color="k", lw=0.8)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    out["utilization"] = _png(fig)
    # speeds over training, joint vanilla runs
    joint = [r for r in records if r["role"] == "joint" and r.get("speed", {}).get("curve")]
    if joint:
        fig, ax = plt.subplots(figsize=(5.5, 3.2))
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for r in joint:
            for k, m in enumerate(mods):
                ys = [_nan(v) for v in r["speed"]["curve"].get(m, [])]
                ax.plot(
                    range(1, len(ys) + 1),
                    ys,
                    color=colors[k % len(colors)],
                    alpha=0.8,
                    label=m if r is joint[0] else None,
                )
        ax.set_xlabel("epoch")
        ax.set_ylabel("speed (" + (diag["speed"]["definition"] or "").split(":")[0] + ")")
        ax.legend(fontsize=8)
        out["speed"] = _png(fig)
    # robustness
    rob = diag["robustness"]
    if rob["levels"]:
        fig, ax = plt.subplots(figsize=(5.5, 3.2))
        levels = [0.0, *rob["levels"]]
        for m in mods:
            ys = [_nan(rob["full"]["mean"]), *[_nan(rob["noise"][m][str(lv)]["mean"]) for lv in rob["levels"]]]
            line = ax.plot(levels, ys, marker="o", label=f"{m} noised")[0]
            ax.scatter(
                [levels[-1] * 1.25],
                [_nan(rob["missing"][m]["mean"])],
                marker="x",
                color=line.get_color(),
                label=f"{m} missing",
            )
        ax.axhline(diag["chance"], ls=":", color="k", lw=1)
        ax.set_xlabel("noise std (x the modality's spread); x: missing")
        ax.set_ylabel("validation accuracy")
        ax.legend(fontsize=8)
        out["robustness"] = _png(fig)
    return out


def write_page(diag: Mapping[str, Any], records: Sequence[Mapping[str, Any]], out: Path) -> tuple[Path, Path]:
    """diagnosis.md (figures in out/figures/) and diagnosis.html (figures embedded); returns both paths."""
    figs = figures(diag, records)
    content = blocks(diag, records, figs)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    for name, png in figs.items():
        (fig_dir / f"{name}.png").write_bytes(png)
    md, page = out / "diagnosis.md", out / "diagnosis.html"
    md.write_text(to_markdown(content))
    page.write_text(to_html(content))
    return md, page
