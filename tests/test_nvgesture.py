"""NVGesture: the list-line parser, the stand-in generator (layout, determinism, lossless FFV1), the loader."""

import dataclasses
import json
import os
import re
import shutil

import cv2
import numpy as np
import pytest
import torch

from greedymm.data import flow as of
from greedymm.data.base import load_dataset
from greedymm.data.idx import DataFormatError
from greedymm.data.nvgesture import (
    CACHE_DIR,
    LIST_FILES,
    LIST_FILES_V2,
    STANDIN_FILE,
    WINDOW,
    decode_item,
    frame_indices,
    load_nvgesture_dir,
    parse_list_line,
    read_list,
    read_window,
)
from greedymm.data.nvgesture_standin import class_table, clip_specs, make_nvgesture_standin, render_clip

TINY = {"classes": 3, "train_per_class": 2, "test_per_class": 2, "size": (64, 48), "seed": 0}
LINE_RE = re.compile(
    r"path:\./Video_data/class_(\d\d)/subject\d+_r\d "
    r"depth:sk_depth:(\d+):(\d+) color:sk_color:(\d+):(\d+) duo_left:duo_left:\d+:\d+ label:(\d+)"
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    """A tiny stand-in shared by the read-only tests (mutating tests copy it)."""
    return make_nvgesture_standin(tmp_path_factory.mktemp("nv") / "nvgesture-standin", progress=False, **TINY)


def _copy(src, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(CACHE_DIR))
    return dst


def _load(root, **kw):
    return load_nvgesture_dir("nvgesture-standin", root, **{"val_fraction": 0.5, "size": 32, **kw})


# ----------------------------------------------------------------------------------------------- parser


def test_parse_the_published_example_line():
    line = (
        "path:./Video_data/class_01/subject13_r0 depth:sk_depth:138:218 color:sk_color:138:218 "
        "duo_left:duo_left:161:254 label:1"
    )
    assert parse_list_line(line) == {
        "path": "./Video_data/class_01/subject13_r0",
        "label": 0,
        "sensors": {
            "depth": {"file": "sk_depth", "start": 138, "end": 218},
            "color": {"file": "sk_color", "start": 138, "end": 218},
            "duo_left": {"file": "duo_left", "start": 161, "end": 254},
        },
    }


GOOD = "path:./Video_data/class_01/s_r0 depth:sk_depth:1:81 color:sk_color:1:81 label:3"


@pytest.mark.parametrize(
    "line",
    [
        "",
        "   ",
        "path",
        GOOD.replace("label:3", "label:0"),
        GOOD.replace("label:3", "label:26"),
        GOOD.replace("label:3", "label:x"),
        GOOD.replace("label:3", "label:\u0663"),  # an Arabic-Indic digit: int() would take it
        GOOD.replace("label:3", "label:1_0"),
        GOOD.replace("label:3", "label:" + "9" * 5000),  # int() refuses > 4300 digits with ValueError
        GOOD + " label:3",
        GOOD.replace("color:sk_color:1:81", "color:sk_color:81:1"),
        GOOD.replace("color:sk_color:1:81", "color:sk_color:1"),
        GOOD.replace("color:sk_color:1:81", "color::1:81"),
        GOOD.replace("color:sk_color:1:81", "color:../x:1:81"),
        GOOD.replace(" color:sk_color:1:81", ""),
        GOOD.replace("depth:sk_depth:1:81", "color:sk_color:1:81"),
        GOOD.replace("./Video_data/class_01/s_r0", "../../etc"),
        GOOD.replace("./Video_data/class_01/s_r0", "/abs/path"),
        GOOD.replace("./Video_data/class_01/s_r0", "./"),
        ":x " + GOOD,
        b"path:x",
        None,
    ],
)
def test_malformed_lines_raise_data_format_error_only(line):
    with pytest.raises(DataFormatError):
        parse_list_line(line)


def test_read_list_names_the_file_and_line(tmp_path):
    lst = tmp_path / LIST_FILES["train"]
    lst.write_text(GOOD + "\n" + GOOD.replace("label:3", "label:x") + "\n")
    with pytest.raises(DataFormatError, match=rf"{re.escape(str(lst))}, line 2: label must be"):
        read_list(lst)


# -------------------------------------------------------------------------------------------- generator


def test_generator_writes_the_exact_layout_and_list_format(standin):
    assert json.loads((standin / STANDIN_FILE).read_text())["real_data"] is False
    for split, n in (("train", 2), ("test", 2)):
        lines = (standin / LIST_FILES[split]).read_text().splitlines()
        assert len(lines) == TINY["classes"] * n
        for line in lines:
            m = LINE_RE.fullmatch(line)
            assert m, line
            cls, d0, d1, c0, c1, label = (int(g) for g in m.groups())
            assert cls == label and 1 <= label <= TINY["classes"] and d0 == c0 and d1 - d0 == c1 - c0 == WINDOW
            folder = standin / parse_list_line(line)["path"]
            assert sorted(p.name for p in folder.iterdir()) == ["sk_color.avi", "sk_depth.avi"]  # no duo_left
    train = {parse_list_line(x)["path"] for x in (standin / LIST_FILES["train"]).read_text().splitlines()}
    test = {parse_list_line(x)["path"] for x in (standin / LIST_FILES["test"]).read_text().splitlines()}
    assert not train & test


def test_generator_is_deterministic_for_a_seed(standin, tmp_path):
    again = make_nvgesture_standin(tmp_path / "again", progress=False, **TINY)
    other = make_nvgesture_standin(tmp_path / "other", progress=False, **{**TINY, "seed": 1})
    for f in LIST_FILES.values():
        assert (again / f).read_text() == (standin / f).read_text()
        assert (other / f).read_text() != (standin / f).read_text()
    rel = parse_list_line((standin / LIST_FILES["test"]).read_text().splitlines()[0])["path"]
    for name in ("sk_color.avi", "sk_depth.avi"):
        a, b = (read_window(r / rel / name, 0, 100) for r in (standin, again))
        assert np.array_equal(a, b)


def test_ffv1_is_lossless_through_the_loader_reader(standin):
    for spec in clip_specs(**TINY)["test"][:3]:
        rgb, depth = render_clip(spec)
        color = read_window(standin / spec.rel_path / "sk_color.avi", 0, spec.length)
        stored_depth = read_window(standin / spec.rel_path / "sk_depth.avi", 0, spec.length)
        assert np.array_equal(color[..., ::-1], rgb)  # OpenCV reads BGR
        assert all(np.array_equal(stored_depth[..., k], depth) for k in range(3))
        # seeking to the window start gives exactly those frames too
        window = read_window(standin / spec.rel_path / "sk_color.avi", spec.start, spec.start + WINDOW)
        assert np.array_equal(window[..., ::-1], rgb[spec.start : spec.start + WINDOW])


def test_depth_only_and_rgb_only_class_pairs():
    spec = clip_specs(**TINY)["train"][0]
    table = class_table(3)
    base, away, striped = (render_clip(dataclasses.replace(spec, gesture=g)) for g in table)
    assert np.array_equal(base[0], away[0]) and not np.array_equal(base[1], away[1])  # 0 vs 1: depth only
    assert np.array_equal(base[1], striped[1]) and not np.array_equal(base[0], striped[0])  # 0 vs 2: RGB only


# ----------------------------------------------------------------------------------------------- loader


def test_loader_shapes_labels_and_splits(standin):
    data = _load(standin)
    assert data.modalities == ("rgb", "depth") and data.in_channels == (3, 1) and data.num_classes == 3
    assert data.arch == "i3d" and data.is_standin and "not NVGesture" in data.source["note"]
    assert (len(data.train), len(data.val), len(data.test)) == (3, 3, 6)
    x, y = data.test.batch(torch.arange(6))
    assert x["rgb"].shape == (6, 3, 8, 32, 32) and x["depth"].shape == (6, 1, 8, 32, 32)
    assert x["rgb"].dtype == torch.float32 and torch.isfinite(x["rgb"]).all()
    assert sorted(y.tolist()) == [0, 0, 1, 1, 2, 2]
    assert sorted(data.train.labels.tolist()) == sorted(data.val.labels.tolist()) == [0, 1, 2]


@pytest.mark.parametrize("renamed", [("train", "test"), ("test",)], ids=["both", "test-only"])
def test_the_list_files_second_name_is_read_too(standin, tmp_path, renamed):
    """nvgesture_{train,test}_correct_v2.lst (without cvpr2016), both or one of them: the same items."""
    root = _copy(standin, tmp_path)
    for split in renamed:
        (root / LIST_FILES[split]).rename(root / LIST_FILES_V2[split])
    a, b = _load(standin, cache=False), _load(root, cache=False)
    for split in ("train", "val", "test"):
        assert getattr(a, split).rows.tolist() == getattr(b, split).rows.tolist()
        assert getattr(a, split).labels.tolist() == getattr(b, split).labels.tolist()
    xa, _ = a.test.batch(torch.arange(2))
    xb, _ = b.test.batch(torch.arange(2))
    assert torch.equal(xa["rgb"], xb["rgb"])
    (root / LIST_FILES_V2["test"]).unlink()
    with pytest.raises(
        FileNotFoundError, match="nvgesture_test_correct_cvpr2016_v2.lst \\(or nvgesture_test_correct_v2"
    ):
        _load(root)


def test_validation_split_is_seeded(standin):
    rows = [tuple(_load(standin, data_seed=s).val.rows) for s in (0, 0, 1, 2, 3)]
    assert rows[0] == rows[1]
    assert len(set(rows)) > 1


def test_sampling_uniform_in_test_and_seeded_random_offset_in_train(standin):
    assert frame_indices(2, 8, train=False).tolist() == [list(range(5, 80, 10))] * 2
    torch.manual_seed(0)
    a = frame_indices(64, 8, train=True)
    torch.manual_seed(0)
    assert torch.equal(a, frame_indices(64, 8, train=True))  # torch's global RNG: resume sees the same clips
    assert ((a[:, 1:] - a[:, :-1]) == 10).all() and a.min() >= 0 and a.max() < WINDOW
    assert len(set(a[:, 0].tolist())) > 1
    data = _load(standin)
    raw = data.test.raw_frames(torch.tensor([1]))
    assert list(raw) == ["rgb", "depth"]
    full_rgb, full_depth = decode_item(standin, data.test.entries[1], 32)
    assert np.array_equal(raw["rgb"][0], full_rgb[5::10]) and np.array_equal(raw["depth"][0], full_depth[5::10])


@pytest.mark.parametrize("modalities", [("rgb", "depth"), ("flow", "rgb", "depth")])
def test_cache_equals_direct_decoding(standin, modalities):
    cached, direct = (_load(standin, cache=c, modalities=modalities) for c in (True, False))
    assert direct.test.cache is None and cached.test.cache is not None
    for split in ("train", "val", "test"):
        idx = torch.arange(len(getattr(cached, split)))
        for train in (False, True):
            torch.manual_seed(7)
            a = getattr(cached, split).batch(idx, train=train)
            torch.manual_seed(7)
            b = getattr(direct, split).batch(idx, train=train)
            assert list(a[0]) == list(b[0]) == list(modalities) and torch.equal(a[1], b[1])
            assert all(torch.equal(a[0][m], b[0][m]) for m in modalities)


def test_cache_is_rebuilt_when_the_source_changes(standin, tmp_path):
    root = _copy(standin, tmp_path)
    _load(root)
    before = sorted(p.name for p in (root / CACHE_DIR).glob("*.npy"))
    assert len(before) == 4  # train/test x rgb/depth
    assert isinstance(np.load(root / CACHE_DIR / before[0], mmap_mode="r"), np.memmap)
    _load(root)
    assert sorted(p.name for p in (root / CACHE_DIR).glob("*.npy")) == before  # reused
    lst = root / LIST_FILES["test"]
    st = lst.stat()
    os.utime(lst, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    _load(root)
    after = sorted(p.name for p in (root / CACHE_DIR).glob("*.npy"))
    assert len(after) == 4 and [a for a in after if a.startswith("test")] != [b for b in before if b.startswith("test")]
    assert [a for a in after if a.startswith("train")] == [b for b in before if b.startswith("train")]


def test_a_missing_video_is_named(standin, tmp_path):
    root = _copy(standin, tmp_path)
    rel = parse_list_line((root / LIST_FILES["train"]).read_text().splitlines()[1])["path"]
    victim = root / rel / "sk_depth.avi"
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(victim))):
        _load(root)


def test_a_video_shorter_than_its_window_is_named(standin, tmp_path):
    root = _copy(standin, tmp_path)
    lst = root / LIST_FILES["test"]
    lines = lst.read_text().splitlines()
    entry = parse_list_line(lines[0])
    n = int(cv2.VideoCapture(str(root / entry["path"] / "sk_color.avi")).get(cv2.CAP_PROP_FRAME_COUNT))
    lines[0] = re.sub(r"color:sk_color:\d+:\d+", f"color:sk_color:{n - 40}:{n + 40}", lines[0])
    lst.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"sk_color\.avi has fewer frames than the window"):
        _load(root, cache=False).test.batch(torch.tensor([0]))
    with pytest.raises(DataFormatError, match=r"sk_color\.avi has fewer frames"):
        _load(root)  # building the cache decodes every window


def test_a_malformed_list_line_names_file_and_line(standin, tmp_path):
    root = _copy(standin, tmp_path)
    lst = root / LIST_FILES["train"]
    lines = lst.read_text().splitlines()
    lines[2] = lines[2].replace("label:", "lable:")
    lst.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=rf"{re.escape(str(lst))}, line 3: token 'lable:\d+' is neither"):
        _load(root)


def test_registry_options_and_errors(standin, tmp_path):
    data = load_dataset("nvgesture-standin", root=standin, val_fraction=0.5, size=32, frames=4)
    assert data.name == "nvgesture-standin" and data.train.batch(torch.tensor([0]))[0]["rgb"].shape[2] == 4
    # the real data set's name on a stand-in folder is still marked as a stand-in
    assert not load_dataset("nvgesture", root=standin, val_fraction=0.5, size=32).source["real_data"]
    with pytest.raises(ValueError, match="bogus"):
        load_dataset("nvgesture-standin", root=standin, bogus=1)
    with pytest.raises(ValueError, match="frames"):
        load_dataset("nvgesture-standin", root=standin, frames=81)
    with pytest.raises(FileNotFoundError, match="make nvgesture-standin"):
        load_dataset("nvgesture", data_dir=tmp_path)
    with pytest.raises(ValueError, match="holds out no"):
        _load(standin, val_fraction=0.2)  # 2 clips per class: 20% rounds to none


def test_generator_replaces_a_stand_in_but_not_foreign_data(tmp_path):
    small = {**TINY, "classes": 2, "train_per_class": 1, "test_per_class": 1}
    root = make_nvgesture_standin(tmp_path / "s", progress=False, **small)
    (root / "extra.txt").write_text("left over")
    make_nvgesture_standin(root, progress=False, **small)
    assert not (root / "extra.txt").exists() and (root / STANDIN_FILE).is_file()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        make_nvgesture_standin(foreign, progress=False, **small)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="classes"):
        make_nvgesture_standin(tmp_path / "x", classes=26, progress=False)
    assert len(set(class_table(25))) == 25


# ------------------------------------------------------------------------------------------ optical flow


def test_three_modalities_keys_shapes_channels_and_order(standin):
    data = _load(standin, modalities=["color", "depth", "flow"])  # "color": the list files' name for rgb
    assert data.modalities == ("rgb", "depth", "flow") and data.in_channels == (3, 1, 2)
    x, y = data.test.batch(torch.arange(6))
    assert list(x) == ["rgb", "depth", "flow"] and len(y) == 6
    assert x["flow"].shape == (6, 2, 8, 32, 32) and x["flow"].dtype == torch.float32
    assert torch.isfinite(x["flow"]).all() and x["flow"].abs().max() <= of.FLOW_CLIP / of.FLOW_STD
    assert x["rgb"].shape == (6, 3, 8, 32, 32) and x["depth"].shape == (6, 1, 8, 32, 32)
    again = load_dataset("nvgesture-standin", root=standin, val_fraction=0.5, size=32, modalities="flow, rgb")
    assert again.modalities == ("flow", "rgb") and again.in_channels == (2, 3)  # the order asked for
    assert list(again.test.batch(torch.tensor([0]))[0]) == ["flow", "rgb"]


def test_flow_is_the_motion_at_the_sampled_rgb_frames(standin):
    data = _load(standin, modalities=("rgb", "flow"))
    for train in (False, True):
        torch.manual_seed(3)
        raw = data.test.raw_frames(torch.arange(6), train=train)
        torch.manual_seed(3)
        t = frame_indices(6, 8, train).numpy()  # the draw raw_frames made, shared by both modalities
        for i in range(6):
            full_rgb, _ = decode_item(standin, data.test.entries[data.test.rows[i]], 32)
            assert np.array_equal(raw["rgb"][i], full_rgb[t[i]])
            assert np.array_equal(raw["flow"][i], of.clip_flow(full_rgb)[t[i]])
    # the stand-in's first classes move right: in the moving pixels, dx is clearly positive and dy about 0
    flow = data.test.cache["flow"]
    moving = np.abs(flow).max(-1) >= 2  # (M, WINDOW, S, S): at least 0.2 % of the side per frame
    dx, dy = flow[..., 0][moving].astype(float), flow[..., 1][moving].astype(float)
    assert moving.any() and dx.mean() > 2 and abs(dy.mean()) < dx.mean() / 4


def test_flow_cache_is_built_once_and_reused(standin, tmp_path, monkeypatch):
    root = _copy(standin, tmp_path)
    _load(root)
    assert not list((root / CACHE_DIR).glob("*flow*"))  # the default never computes flow
    _load(root, modalities="rgb,depth,flow")
    flows = sorted((root / CACHE_DIR).glob("*-flow-*.npy"))
    assert [p.name.split("-")[0] for p in flows] == ["test", "train"] and len(list((root / CACHE_DIR).glob("*"))) == 6
    stamps = [p.stat().st_mtime_ns for p in flows]
    assert np.load(flows[0], mmap_mode="r").dtype == np.int8

    def no_flow(*args, **kwargs):
        raise AssertionError("flow was computed again")

    monkeypatch.setattr(of, "clip_flow", no_flow)
    data = _load(root, modalities="rgb,depth,flow")
    data.train.batch(torch.arange(len(data.train)), train=True)
    assert sorted((root / CACHE_DIR).glob("*-flow-*.npy")) == flows
    assert [p.stat().st_mtime_ns for p in flows] == stamps
    assert not list((root / CACHE_DIR).glob(".*.tmp"))  # no temporary file left behind


@pytest.mark.parametrize(
    ("modalities", "match"),
    [
        (["rgb", "optical_flow"], r"unknown modality \['optical_flow'\]; choose one or more, each once, of \['depth'"),
        ("rgb,depth,rgb", "a modality twice"),
        ("color,rgb", "a modality twice"),
        ([], "no modality"),
        ("", "unknown modality"),
        (3, "list of names or a comma-separated string"),
        ([1, 2], "list of names or a comma-separated string"),
    ],
)
def test_bad_modalities_are_refused_with_the_choices(standin, modalities, match):
    with pytest.raises(ValueError, match=match):
        _load(standin, modalities=modalities)
    with pytest.raises(ValueError, match="data.modalities=rgb,depth,flow"):
        load_dataset("nvgesture-standin", root=standin, modalities=modalities)
