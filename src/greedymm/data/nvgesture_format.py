"""NVGesture's own files: the list lines (``nvgesture_*_correct_cvpr2016_v2.lst``, also found as
``nvgesture_*_correct_v2.lst``) and windows of its AVI videos.

Pure readers of the format as NVIDIA ships it (docs/DATA.md); what an item is (resizing, caching, modalities) is
``nvgesture.py``'s business. A list line: ``path:./Video_data/class_01/subject13_r0 depth:sk_depth:138:218
color:sk_color:138:218 duo_left:duo_left:161:254 label:1``; sensor tokens are
``<sensor>:<file stem>:<start>:<end>``, labels 1..25.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from .idx import DataFormatError
from .optional import optional_module

cv2 = optional_module("cv2")  # imported on first use: greedymm[video]

LIST_FILES = {"train": "nvgesture_train_correct_cvpr2016_v2.lst", "test": "nvgesture_test_correct_cvpr2016_v2.lst"}
# the same files as they also circulate (without "cvpr2016"); read when the names above are absent
LIST_FILES_V2 = {"train": "nvgesture_train_correct_v2.lst", "test": "nvgesture_test_correct_v2.lst"}
VIDEO_DIR = "Video_data"
SENSORS = {"rgb": "color", "depth": "depth"}  # modality -> sensor token in the list lines
NUM_CLASSES = 25
WINDOW = 80  # frames per gesture window (docs/DATA.md)
LINE_EXAMPLE = (
    "path:./Video_data/class_01/subject13_r0 depth:sk_depth:138:218 color:sk_color:138:218 "
    "duo_left:duo_left:161:254 label:1"
)
_DIGITS = re.compile(r"[0-9]{1,9}")  # ASCII only: int() would also take "١٢", "1_0" and " 7"


# ------------------------------------------------------------------------------------------ list files


def find_list_file(root: Path, split: str) -> Path | None:
    """The ``split`` list file under ``root``: its name in NVIDIA's archive (LIST_FILES) if present, else its
    second name (LIST_FILES_V2); None when neither is there."""
    for names in (LIST_FILES, LIST_FILES_V2):
        if (root / names[split]).is_file():
            return root / names[split]
    return None


def _number(text: str, what: str) -> int:
    if not _DIGITS.fullmatch(text):
        raise DataFormatError(f"{what} must be a non-negative integer of at most 9 digits, got {text!r}")
    return int(text)


def parse_list_line(line: str) -> dict[str, Any]:
    """One list line -> {"path": str, "label": int (0-based), "sensors": {name: {"file", "start", "end"}}}.

    Pure; any input gives either such a dict or a DataFormatError saying what is wrong (never another error).
    """
    if not isinstance(line, str):
        raise DataFormatError(f"a list line must be text, got {type(line).__name__}")
    tokens = line.split()
    if not tokens:
        raise DataFormatError("empty line")
    path: str | None = None
    label: int | None = None
    sensors: dict[str, dict[str, Any]] = {}
    for token in tokens:
        key, sep, rest = token.partition(":")
        if not sep or not key:
            raise DataFormatError(f"token {token!r} is not <key>:<value>")
        if key in ("path", "label") and (path if key == "path" else label) is not None:
            raise DataFormatError(f"{key!r} appears twice")
        if key == "path":
            path = _check_path(rest)
        elif key == "label":
            label = _number(rest, "label")
            if not 1 <= label <= NUM_CLASSES:
                raise DataFormatError(f"label must be in 1..{NUM_CLASSES}, got {label}")
        else:
            parts = rest.split(":")
            if len(parts) != 3:
                raise DataFormatError(
                    f"token {token!r} is neither path:, label: nor a sensor token <sensor>:<file stem>:<start>:<end>"
                )
            if key in sensors:
                raise DataFormatError(f"sensor {key!r} appears twice")
            stem, start, end = parts[0], _number(parts[1], f"{key} start"), _number(parts[2], f"{key} end")
            if not stem or any(c in stem for c in "/\\\x00") or stem in (".", ".."):
                raise DataFormatError(f"sensor {key!r} has a bad file stem {stem!r}")
            if end <= start:
                raise DataFormatError(f"sensor {key!r} window {start}:{end} is empty (end must exceed start)")
            sensors[key] = {"file": stem, "start": start, "end": end}
    missing = [k for k, v in (("path", path), ("label", label)) if v is None]
    missing += [s for s in SENSORS.values() if s not in sensors]
    if missing:
        raise DataFormatError(f"missing {', '.join(repr(m) for m in missing)}")
    assert path is not None and label is not None  # for the type checker; checked just above
    return {"path": path, "label": label - 1, "sensors": sensors}


def _check_path(value: str) -> str:
    parts = value.split("/")
    # The loader joins this under <root>: an absolute path or ".." would read outside the data set.
    if not value or value.startswith("/") or ".." in parts or "\\" in value or "\x00" in value:
        raise DataFormatError(f"path must be relative inside the data set (like ./Video_data/...), got {value!r}")
    if not [p for p in parts if p not in ("", ".")]:
        raise DataFormatError(f"path {value!r} names no folder")
    return value


def read_list(path: Path) -> list[dict[str, Any]]:
    """Parse a .lst file; a bad line raises DataFormatError naming the file, the line number and the problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataFormatError(f"{path} is not UTF-8 text ({err}); is it an NVGesture list file?") from err
    entries = []
    for lineno, line in enumerate(text.split("\n"), start=1):  # numbered as editors number them
        if not line.strip():
            continue  # blank lines (a trailing newline, an empty last line) carry nothing
        try:
            entries.append(parse_list_line(line))
        except DataFormatError as err:
            raise DataFormatError(f"{path}, line {lineno}: {err}; a line looks like `{LINE_EXAMPLE}`") from err
    if not entries:
        raise DataFormatError(f"{path} holds no entries; restore it from the NVGesture archive")
    return entries


# --------------------------------------------------------------------------------------------- videos


def read_window(avi: Path, start: int, end: int) -> np.ndarray:
    """Frames start..end-1 of ``avi`` as stored, (end - start, H, W, 3) uint8 in OpenCV's BGR order."""
    avi = Path(avi)
    if not avi.is_file():
        raise FileNotFoundError(f"missing video {avi}; the list file names it, so the data set is incomplete")
    cap = cv2.VideoCapture(str(avi))
    try:
        if not cap.isOpened():
            raise DataFormatError(f"OpenCV cannot open {avi}; is it a complete AVI file?")
        if start > 0 and not cap.set(cv2.CAP_PROP_POS_FRAMES, start):
            raise DataFormatError(f"cannot seek to frame {start} in {avi}")
        frames = []
        for _ in range(end - start):
            ok, frame = cap.read()
            if not ok:
                raise DataFormatError(
                    f"{avi} has fewer frames than the window {start}:{end} in its list line "
                    f"(read {len(frames)} of {end - start} from frame {start}); the video is truncated or the "
                    "list does not belong to it"
                )
            frames.append(frame)
    finally:
        cap.release()
    return np.stack(frames)
