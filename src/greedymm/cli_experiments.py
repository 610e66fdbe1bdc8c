"""The experiment subcommands: `greedymm sweep`, `greedymm report`, `greedymm reproduce`.

``add_experiment_commands(subparsers)`` registers them on the main parser (cli.build_parser). Each command
function returns an exit code; bad input raises ValueError / FileNotFoundError / RuntimeError for cli.main.
"""

from __future__ import annotations

import argparse
import sys

METHODS = ["vanilla", "guided", "random"]
INTERRUPTED = (
    "interrupted; run the same command again to carry on (finished runs are kept, interrupted ones resume "
    "from their last checkpoint)"
)


def _workers(n: int) -> int:
    if n < 1:
        raise ValueError(f"--workers must be >= 1, got {n}")
    return n


def _sigterm_interrupts() -> None:
    import signal

    def interrupt(signum, frame):  # noqa: ANN001
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def add_log_option(parser: argparse.ArgumentParser, help: str) -> None:
    """``--log``: extra log destinations (tblog.LOGS), for ``train`` and ``sweep``."""
    from .tblog import LOGS

    parser.add_argument("--log", nargs="+", default=[], choices=list(LOGS), help=help)


class _DeprecatedPreset(argparse.Action):
    """``--preset NAME``: the earlier name of ``--protocol NAME``; still works, with a one-line note on stderr."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001
        print("note: --preset is deprecated; use --protocol (same meaning)", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_protocol_option(p: argparse.ArgumentParser, help: str) -> None:
    """``--protocol NAME`` (choices from config.PROTOCOLS) and its deprecated alias ``--preset``."""
    from .config import PROTOCOLS

    p.add_argument("--protocol", choices=sorted(PROTOCOLS), help=help)
    p.add_argument("--preset", dest="protocol", action=_DeprecatedPreset, help=argparse.SUPPRESS)


def hparams_epilog() -> str:
    """The methods' hyper-parameter specs (name=default (valid values): what it does), for a command's --help."""
    from .methods import list_methods, method_class

    lines = ["method hyper-parameters (--set NAME=VALUE; `greedymm list` shows more):"]
    for name in list_methods():
        specs = method_class(name).describe_hparams()
        lines += [f"  {name}:", *(f"    {line}" for line in specs)] if specs else [f"  {name}: none"]
    return "\n".join(lines)


SLURM_OPTIONS = (
    "partition",
    "time",
    "gpus_per_run",
    "cpus_per_run",
    "mem_per_run",
    "max_parallel",
    "sbatch_arg",
    "checkpoint_every",
)


def _launcher(args: argparse.Namespace):  # noqa: ANN202
    """The sweep's launcher: a local pool (``--workers``) or Slurm (greedymm.slurm, the ``slurm`` extra)."""
    from pathlib import Path

    from .sweep import LocalLauncher

    given = [f"--{name.replace('_', '-')}" for name in SLURM_OPTIONS if getattr(args, name) not in (None, [])]
    if args.launcher == "local":
        if given or args.no_wait:
            raise ValueError(f"{', '.join(given or ['--no-wait'])}: Slurm options; add --launcher slurm to use them")
        return LocalLauncher()
    from .slurm import SlurmLauncher, SlurmOptions, parse_sbatch_args, parse_time, require_slurm, require_submitit

    if args.workers != 1:
        raise ValueError("--workers is for the local launcher; with --launcher slurm, --max-parallel N caps the runs")
    options = SlurmOptions(
        partition=args.partition,
        time=parse_time(args.time) if args.time is not None else SlurmOptions.time,
        gpus=args.gpus_per_run or 0,
        cpus=args.cpus_per_run or 1,
        mem=args.mem_per_run,
        max_parallel=args.max_parallel,
        sbatch=parse_sbatch_args(args.sbatch_arg or []),
        signal_delay_s=args.signal_delay,
        checkpoint_every=args.checkpoint_every or 0,
        job_name=f"greedymm-{Path(args.out).name}",
    )
    if not args.dry_run:
        require_submitit()
        require_slurm()
    return SlurmLauncher(options, wait=not args.no_wait)


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import plan_sweep, run_sweep

    if args.status:
        from .slurm import format_status, sweep_status

        print(format_status(sweep_status(args.status)))
        return 0
    if not args.out:
        raise ValueError("a sweep needs --out DIR (the sweep folder, e.g. runs/sweep1); --status DIR shows one")
    launcher = _launcher(args)
    jobs = plan_sweep(
        args.datasets or [],
        args.methods,
        args.seeds,
        args.out,
        args.set,
        args.epochs,
        args.data_dir,
        args.log,
        protocol_name=args.protocol,
    )
    _sigterm_interrupts()  # `kill <sweep>` stops its runs as Ctrl-C does
    try:
        result = run_sweep(jobs, launcher, _workers(args.workers), dry_run=args.dry_run)
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    if args.dry_run:
        return 0
    if not result.ok:
        print(result.failure_text(), file=sys.stderr)
        return 1
    if (args.no_wait and result.launched) or result.in_flight:
        what = [f"{len(result.launched)} runs submitted"] if args.no_wait and result.launched else []
        what += [f"{len(result.in_flight)} queued or running from an earlier sweep"] if result.in_flight else []
        print(f"{'; '.join(what)}; greedymm sweep --status {args.out} follows them")
        return 0
    print(f"all {len(result.jobs)} runs finished; tables and figures: greedymm report {args.out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report.aggregate import markdown_tables, write_report

    path, rows = write_report(args.path, args.format, args.out, claims=args.claims)
    if args.format == "md":
        print(markdown_tables(rows))
        print()
    if args.claims:
        from .reproduce import format_claims

        print(format_claims(rows))
        print()
    print(f"report: {path}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from .reproduce import reproduce

    try:
        return reproduce(
            args.name,
            quick=args.quick,
            seeds=args.seeds,
            workers=_workers(args.workers),
            out=args.out,
            data_dir=args.data_dir,
            methods=args.methods,
        )
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130


def add_experiment_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `sweep`, `report` and `reproduce` on the main parser's subparsers."""
    s = subparsers.add_parser(
        "sweep",
        help="train every (data set, method, seed) combination, resumably",
        description="One run folder per (data set, method, seed, settings), named with a hash of its config. "
        "Re-running the same command skips finished runs, resumes crashed ones and restarts broken ones.",
        epilog=hparams_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument(
        "--datasets", nargs="+", help="data sets (recommended: cg-mnist; with --protocol, default: the protocol's)"
    )
    add_protocol_option(
        s,
        "start every run from a named protocol of another paper, on top of the data set's defaults "
        "(`greedymm list` shows them); --set overrides it",
    )
    s.add_argument(
        "--methods",
        nargs="+",
        default=METHODS,
        help="methods, each optionally on a fusion: method@fusion, e.g. vanilla vanilla@concat ogm-ge@concat "
        "(default and recommended: vanilla guided random; `greedymm list` shows each method's fusions)",
    )
    s.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds (recommended: 0 1 2)")
    s.add_argument("--out", help="sweep folder, e.g. runs/sweep1 (required)")
    s.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="settings for every run, e.g. alpha=0.01 Q=5 (recommended: the defaults); a method hyper-parameter "
        "only reaches the methods that have it",
    )
    s.add_argument("--epochs", type=int, help="epochs per run (default: the data set's defaults)")
    s.add_argument(
        "--workers",
        type=int,
        default=1,
        help="runs at a time (default 1; recommended: 1 per GPU; on CPU up to the number of cores, each run "
        "then gets cores / N threads)",
    )
    s.add_argument("--data-dir", dest="data_dir", help="where fetched data lives (default $GREEDYMM_DATA or ./data)")
    s.add_argument("--dry-run", action="store_true", help="print the commands; run nothing")
    add_log_option(
        s,
        "also log each run to <run>/tensorboard (needs greedymm[tensorboard]); `tensorboard --logdir "
        "OUT` shows every run",
    )
    s.add_argument(
        "--status",
        metavar="DIR",
        help="say per run of the sweep folder DIR: finished, running, queued (Slurm job id) or failed (with its log's "
        "last lines); runs nothing",
    )
    s.add_argument(
        "--launcher",
        choices=["local", "slurm"],
        default="local",
        help="where runs train: local (default: --workers processes here) or slurm (one Slurm job per run, "
        "through submitit: pip install 'greedymm[slurm]'; docs/CLUSTER.md)",
    )
    g = s.add_argument_group("Slurm (--launcher slurm)")
    g.add_argument("--partition", help="Slurm partition (default: the cluster's default partition)")
    g.add_argument(
        "--time",
        help="time limit per job: minutes (90) or sbatch's forms (1:30:00, 2-00:00:00); default 60. A job warned "
        "before its limit is requeued and resumes from its last finished epoch",
    )
    g.add_argument("--gpus-per-run", type=int, help="GPUs per run (default 0); 2 or more train under torchrun")
    g.add_argument("--cpus-per-run", type=int, help="CPU cores per run (default 1; also the run's torch threads)")
    g.add_argument("--mem-per-run", help="memory per run as sbatch takes it, e.g. 16G (default: the cluster's)")
    g.add_argument("--max-parallel", type=int, help="runs at a time (default: as many as the cluster gives)")
    g.add_argument(
        "--sbatch-arg",
        nargs="+",
        action="extend",
        metavar="NAME[=VALUE]",
        help="further sbatch options without their dashes, e.g. qos=high account=mylab exclusive",
    )
    g.add_argument(
        "--signal-delay",
        type=int,
        default=120,
        metavar="SECONDS",
        help="how long before the time limit Slurm warns a job so it can requeue itself (default 120)",
    )
    g.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="N",
        help="also checkpoint every N steps inside an epoch, so a job stopped at its time limit loses at most N "
        "steps (default: at epoch ends only)",
    )
    g.add_argument(
        "--no-wait", action="store_true", help="return once the jobs are submitted (default: follow them to the end)"
    )
    s.set_defaults(fn=cmd_sweep)

    r = subparsers.add_parser(
        "report",
        help="tables (mean ± std over seeds) and figures of the runs under a folder",
        description="Aggregate every run folder (results.jsonl) under PATH at each run's best-validation epoch.",
    )
    r.add_argument("path", help="sweep folder or run folder, e.g. runs/sweep1")
    r.add_argument(
        "--format",
        choices=["md", "html", "csv"],
        default="md",
        help="md (recommended; PNG figures beside it), html (figures embedded), csv (the table only)",
    )
    r.add_argument("--out", help="report file (default PATH/report.<format>)")
    r.add_argument(
        "--claims",
        action="store_true",
        help="also judge the paper's claims per data set and data source (docs/PAPER.md section 7), here and in the "
        "report",
    )
    r.set_defaults(fn=cmd_report)

    p = subparsers.add_parser(
        "reproduce",
        help="sweep vanilla/guided/random, report, and check the paper's claims",
        description="Runs the data set's reproduction config for vanilla, guided and random, writes the report, "
        "and prints whether each claim of the paper held, with the numbers behind each verdict.",
    )
    p.add_argument("name", help="data set (recommended: cg-mnist)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a few epochs and 2 seeds (minutes on CPU); falls back to the embedded cg-digits set when the "
        "data is absent. Indicative only",
    )
    p.add_argument("--seeds", nargs="+", type=int, help="training seeds (default 0 1 2; --quick: 0 1)")
    p.add_argument(
        "--methods",
        nargs="+",
        help="methods to compare, each optionally on a fusion (method@fusion), e.g. vanilla guided random "
        "vanilla@concat pmr@concat (default: vanilla guided random, whose runs the claims are judged on)",
    )
    p.add_argument(
        "--workers", type=int, default=1, help="runs at a time (default 1; recommended: 2 on a 2-core CPU, 1 per GPU)"
    )
    p.add_argument("--out", help="sweep folder (default runs/reproduce-<name>[-quick])")
    p.add_argument("--data-dir", dest="data_dir", help="where fetched data lives (default $GREEDYMM_DATA or ./data)")
    p.set_defaults(fn=cmd_reproduce)

    from .diagnose.cli import add_diagnose_command

    add_diagnose_command(subparsers)
