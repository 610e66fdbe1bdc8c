"""`greedymm diagnose`: the command line of ``greedymm.diagnose`` (registered by cli_experiments)."""

from __future__ import annotations

import argparse
import sys


def cmd_diagnose(args: argparse.Namespace) -> int:
    from . import DEFAULT_CURES, diagnose, plan

    cures = DEFAULT_CURES if args.cures is None else [c for c in args.cures if c != "none"]
    given = {}
    if args.modalities:
        given["modalities"] = [m.strip() for m in args.modalities.split(",")]
    if args.data_dir:
        given["data_dir"] = args.data_dir
    from ..data.base import dataset_label

    out = args.out or f"diagnose-{dataset_label(args.dataset)}"
    common = dict(
        out=out,
        seeds=args.seeds,
        max_minutes=args.max_minutes,
        cures=cures,
        cure_anyway=args.cure_anyway,
        epochs=args.epochs,
        fusion=args.fusion,
        sets=args.set,
        device=args.device,
        reuse=args.reuse,
        echo=lambda s: print(s, flush=True),
        **given,
    )
    if args.dry_run:
        plan(args.dataset, **common)
        return 0
    try:
        d = diagnose(args.dataset, **common)
    except KeyboardInterrupt:
        print("interrupted; run the same command again to carry on (finished runs are reused)", file=sys.stderr)
        return 130
    print(f"verdict: {d.verdict}")
    if d.under_used:
        print(f"under-used: {', '.join(d.under_used)}")
    if d.numbers.get("cannot_judge_because"):
        print(f"cannot judge the cures: {'; '.join(d.numbers['cannot_judge_because'])}")
    if d.recommendation:
        r = d.recommendation
        print(f"use: {r['method']} on {r['fusion']} ({r['settings']}); {r['vs_vanilla']}")
    for w in d.numbers["warnings"]:
        print(f"warning ({w['kind']}): {w['text']}")
    print(f"report: {d.html_path} ({d.markdown_path}); numbers: {d.json_path}")
    return 0


def add_diagnose_command(subparsers: argparse._SubParsersAction) -> None:
    from ..choices import FUSIONS
    from ..config import DEFAULT_DATASET
    from . import DEFAULT_CURES

    d = subparsers.add_parser(
        "diagnose",
        help="is the model greedy, should it be balanced, and with what (docs/DIAGNOSE.md)",
        description="Trains each modality alone and the joint model over seeds, measures on validation how much "
        "the joint model uses each modality, and, when one is under-used, tries the cures on the same seeds. "
        "Writes diagnosis.json and a report page (markdown and HTML). Test accuracy is reported, never used to "
        "decide. Running the same command again, with more seeds, cures or minutes, reuses every finished run.",
    )
    d.add_argument("--dataset", default=DEFAULT_DATASET, help="data set, or npz:PATH for your own arrays")
    d.add_argument("--fusion", default="mmtm", choices=FUSIONS, help="the joint model's fusion (default mmtm)")
    d.add_argument("--epochs", type=int, help="epochs per run (default: the data set's)")
    d.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds (default 0 1 2)")
    d.add_argument("--max-minutes", type=float, help="time budget; runs that would not fit are left out and named")
    d.add_argument(
        "--cures",
        nargs="+",
        help=f"methods to try when a modality is under-used, method or method@fusion, or none (default: "
        f"{' '.join(DEFAULT_CURES)})",
    )
    d.add_argument(
        "--cure-anyway",
        action="store_true",
        help="try the cures even when no modality is under-used (a cure can help for other reasons; the verdict "
        "stays not-greedy and a warning names a cure that beats vanilla)",
    )
    d.add_argument("--modalities", help="use these modalities, in this order, e.g. audio,text (default: all)")
    d.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="settings for every run")
    d.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    d.add_argument("--data-dir", dest="data_dir", help="where fetched data lives")
    d.add_argument(
        "--reuse",
        nargs="+",
        default=[],
        metavar="DIR",
        help="sweep or run folders whose finished runs with exactly the settings a run of the protocol needs are "
        "copied in instead of trained (e.g. the --out of an earlier greedymm sweep)",
    )
    d.add_argument("--out", help="output folder (default diagnose-<dataset>)")
    d.add_argument(
        "--dry-run",
        action="store_true",
        help="list the runs it would train, reuse or find finished, and the time to expect; train, copy and "
        "write nothing",
    )
    d.set_defaults(fn=cmd_diagnose)
