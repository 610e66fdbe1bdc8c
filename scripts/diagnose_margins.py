"""How far each diagnosis sat from the lines of ``greedymm diagnose``'s rules.

A verdict of ``greedymm diagnose`` comes from numbers compared with fixed lines (docs/DIAGNOSE.md): a modality is
*ignored* when it is informative alone and the joint model's validation accuracy moves by less than ``IGNORED``
without it; it is *under-trained* when the joint model's path through it keeps less than ``SHARE_RATIO`` times the
share another modality's path keeps, lower in every seed; it is *below-alone* when the modality alone reaches more
than ``BELOW_ALONE`` above the joint model on validation, lower in every seed. The lines were set on generated data.
This script reads the ``diagnosis.json`` of finished diagnoses and prints, per modality, the number each rule
compared with its line and the ratio to the line, so a reader sees which verdicts a small move of a line would
change; and the two numbers of the ``test-differs`` warning (the joint model's validation minus test accuracy,
against ``TEST_GAP``; each modality alone minus the joint model on test), which changes no verdict. Usage::

    python scripts/diagnose_margins.py diag/mfeat diag/smartwatch ...          # a markdown table on stdout

Nothing is recomputed: the numbers are the ones the rules used, as ``diagnosis.json`` stores them.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from greedymm.diagnose.rules import BELOW_ALONE, IGNORED, INFORMATIVE, SATURATED, SHARE_RATIO, TEST_GAP


def margins(diagnosis: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per modality: the "ignored" rule's utilization against its line, the "under-trained" rule's share
    ratio (kept / the other's kept) against its line, the "below-alone" rule's gap (alone - joint on validation),
    and whether each fired."""
    rules = diagnosis["rules"]
    rows = []
    for m in diagnosis["modalities"]:
        ign = next((r for r in rules if r["rule"] == "ignored" and r["modality"] == m), None)
        und = next((r for r in rules if r["rule"] == "under-trained" and r["modality"] == m), None)
        below = next((r for r in rules if r["rule"] == "below-alone" and r["modality"] == m), None)
        row: dict[str, Any] = {"modality": m, "information": math.nan, "u": math.nan, "ratio": math.nan}
        row["alone_minus_joint"] = below["numbers"]["alone_minus_joint"] if below else math.nan
        row["below_alone"] = bool(below and below["fired"])
        if ign is not None:
            row.update(information=ign["numbers"]["information"], u=ign["numbers"]["u_mean"], ignored=ign["fired"])
        if und is not None:
            n = und["numbers"]
            other = n["other_kept"]
            row.update(
                against=n["against"],
                ratio=n["kept"] / other if other and other > 0 else math.nan,
                every_seed=bool(n["lower_in_every_seed"]),
                under_trained=und["fired"],
            )
        rows.append(row)
    return rows


def _num(x: float, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _minus(a: float | None, b: float | None) -> float:
    return math.nan if a is None or b is None else a - b


def table(folders: list[Path]) -> str:
    """The markdown table of every folder's margins (module docstring)."""
    head = (
        f"| diagnosis | verdict | modality | information alone (line {INFORMATIVE:g}) | u: accuracy lost without it "
        f"(line {IGNORED:g}) | kept / the other's kept (line {SHARE_RATIO:g}) | lower in every seed | "
        f"alone - joint, val (line {BELOW_ALONE:g}) | fired | "
        f"joint val (line {SATURATED:g}) | joint val - test (line {TEST_GAP:g}) | alone test - joint test |"
    )
    lines = [head, "|" + "---|" * 12]
    for folder in folders:
        path = folder / "diagnosis.json"
        if not path.is_file():
            raise SystemExit(f"{path}: no diagnosis.json; give the folder of a finished `greedymm diagnose --out`")
        d = json.loads(path.read_text())
        joint = d["joint"]["val"]["mean"]
        joint_test = d["joint"].get("test", {}).get("mean", math.nan)
        for row in margins(d):
            alone_test = d["modalities"][row["modality"]].get("alone_test", {}).get("mean", math.nan)
            fired = [k for k in ("ignored", "under_trained", "below_alone") if row.get(k)]
            lines.append(
                f"| {folder.name} | {d['verdict']} | {row['modality']} | {_num(row['information'], 2)} | "
                f"{_num(row['u'])} | {_num(row['ratio'], 2)} | {'yes' if row.get('every_seed') else 'no'} | "
                f"{_num(row['alone_minus_joint'])} | "
                f"{', '.join(r.replace('_', '-') for r in fired) or '-'} | {_num(joint)} | "
                f"{_num(_minus(joint, joint_test))} | {_num(_minus(alone_test, joint_test))} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folders", nargs="+", type=Path, help="output folders of `greedymm diagnose`")
    print(table(p.parse_args(argv).folders))


if __name__ == "__main__":
    main()
