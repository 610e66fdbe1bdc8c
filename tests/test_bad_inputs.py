"""The bad-input catalogue (docs/BAD_INPUTS.md): entries not covered by the module-specific test files."""

import errno
import gzip
import os
import struct

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import tiny_colored_data
from greedymm.checkpoint import load_checkpoint, save_checkpoint
from greedymm.cli import main
from greedymm.config import TrainConfig, parse_set
from greedymm.data.colored import ColoredSplit
from greedymm.data.idx import DataFormatError, read_idx
from greedymm.train import fit


def cfg(**kw):
    base = dict(
        dataset="tiny", method="guided", epochs=2, batch_size=16, optimizer="adam", lr=3e-3, width=0.25, device="cpu"
    )
    return TrainConfig(**{**base, **kw})


def test_empty_split():
    empty = torch.zeros(0, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="empty split"):
        ColoredSplit(empty, torch.zeros(0, dtype=torch.long), torch.zeros(0, 3))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("epochs", 0, "epochs must be >= 1"),
        ("batch_size", 1, "batch_size must be >= 2"),
        ("lr", -1.0, "lr must be > 0"),
        ("optimizer", "lbfgs", "optimizer must be one of"),
        ("squeeze_means", "mean", "squeeze_means must be one of"),
        ("warmup_epochs", -1.0, "warmup_epochs must be >= 0"),
    ],
)
def test_config_values_out_of_range(field, value, message):
    with pytest.raises(ValueError, match=message):
        cfg(**{field: value})


def test_set_without_equals_and_wrong_type():
    with pytest.raises(ValueError, match="key=value"):
        parse_set(["alpha"], {"alpha": 0.01})
    with pytest.raises(ValueError, match="expected float"):
        parse_set(["alpha=high"], {"alpha": 0.01})


def test_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {}, "step": 1})

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(RuntimeError, match=r"No space left on device.*previous last.pt is intact"):
        save_checkpoint(path, {"model": {}, "step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path) == {"model": {}, "step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_full_disk_during_training_names_the_checkpoint(tmp_path, monkeypatch):
    data = tiny_colored_data()
    real = os.fsync

    def flaky(fd):
        if (tmp_path / "r" / "last.pt").exists():  # the first epoch's checkpoint saves, later ones do not
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(os, "fsync", flaky)
    with pytest.raises(RuntimeError, match="could not write checkpoint"):
        fit(cfg(), tmp_path / "r", progress=False, data=data)
    monkeypatch.undo()
    state = load_checkpoint(tmp_path / "r" / "last.pt")
    assert state["epoch"] == 1  # the last good checkpoint survived; resume continues from it
    fit(cfg(), tmp_path / "r", resume=True, progress=False, data=data)
    assert (tmp_path / "r" / "done").exists()


def test_half_written_checkpoint_is_never_loaded(tmp_path):
    data = tiny_colored_data()
    fit(cfg(epochs=1), tmp_path / "r", progress=False, data=data)
    good = load_checkpoint(tmp_path / "r" / "last.pt")
    # a save killed before its rename leaves only a temp file; resume reads the complete last.pt
    (tmp_path / "r" / ".last.pt.abc123.tmp").write_bytes(b"\x80\x02half")
    fit(cfg(epochs=2), tmp_path / "r", resume=True, progress=False, data=data)
    assert load_checkpoint(tmp_path / "r" / "last.pt")["step"] == 2 * good["step"]


def test_damaged_checkpoint_gives_a_clear_error(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="damaged or not a greedymm checkpoint"):
        load_checkpoint(tmp_path / "last.pt")


def test_resume_without_run_and_unknown_names_via_cli(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "missing")]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert main(["train", "--method", "vanila", "--out", str(tmp_path / "x")]) == 2
    assert "Did you mean 'vanilla'" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.booleans())
def test_idx_reader_never_crashes_with_a_foreign_error(tmp_path_factory, payload, compress):
    path = tmp_path_factory.mktemp("idx") / "f.idx"
    path.write_bytes(gzip.compress(payload) if compress else payload)
    try:
        read_idx(path)
    except DataFormatError as e:
        assert "f.idx" in str(e)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 255), st.integers(0, 4), st.lists(st.integers(0, 6), max_size=4), st.binary(max_size=40))
def test_idx_headers_with_plausible_structure(tmp_path_factory, code, ndim, dims, body):
    path = tmp_path_factory.mktemp("idx") / "h.idx"
    dims = (dims + [1] * ndim)[:ndim]
    path.write_bytes(bytes([0, 0, code, ndim]) + b"".join(struct.pack(">I", d) for d in dims) + body)
    try:
        arr = read_idx(path)
        assert list(arr.shape) == dims
    except DataFormatError:
        pass


_LST_PIECES = st.sampled_from(
    [
        "path:./Video_data/class_01/subject13_r0",
        "depth:sk_depth:138:218",
        "color:sk_color:138:218",
        "duo_left:duo_left:161:254",
        "label:1",
        "label:0",
        "label:x",
        "depth:sk_depth:9:1",
        "color::1:2",
        ":",
        "::",
        "path:",
        "label:99",
        " ",
        "\t",
        "depth:sk_depth:-1:80",
        "color:sk_color:1e3:2",
        "path:../../etc",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=120), st.lists(_LST_PIECES, max_size=7).map(" ".join)))
def test_list_line_parser_never_crashes_with_a_foreign_error(line):
    from greedymm.data.nvgesture import parse_list_line

    try:
        entry = parse_list_line(line)
    except DataFormatError:
        return
    assert 0 <= entry["label"] < 25
    assert all(w["start"] < w["end"] for w in entry["sensors"].values())


def test_list_line_parser_accepts_the_published_format():
    from greedymm.data.nvgesture import parse_list_line

    line = "path:./Video_data/class_01/subject13_r0 depth:sk_depth:138:218 color:sk_color:138:218 "
    entry = parse_list_line(line + "duo_left:duo_left:161:254 label:1")
    assert entry["label"] == 0 and entry["sensors"]["depth"] == {"file": "sk_depth", "start": 138, "end": 218}


class _WritesAFile:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))  # creates the file if this is ever unpickled


def test_a_crafted_checkpoint_runs_no_code_and_is_refused_by_name(tmp_path):
    import torch

    target = tmp_path / "pwned"
    torch.save({"model": {}, "payload": _WritesAFile(target)}, tmp_path / "last.pt")
    with pytest.raises(RuntimeError, match=r"refusing checkpoint .*last.pt: it asks for [a-z.]*open"):
        load_checkpoint(tmp_path / "last.pt")
    assert not target.exists()
    # the same through the CLI: eval and resume say which file, without a traceback
    (tmp_path / "best.pt").write_bytes((tmp_path / "last.pt").read_bytes())
    assert main(["eval", str(tmp_path)]) == 2
    assert not target.exists()


@pytest.mark.parametrize(
    "item, message",
    [
        ("epochs=ten", "epochs must be int, got 'ten'"),
        ("epochs=2.5", "epochs must be int"),
        ("lr=NaN", "lr must be a finite number"),
        ("lr=Infinity", "lr must be a finite number"),
        ("width=true", "width must be float, got True"),
        ("data_dir=3", "data_dir must be str or null"),
        ("modalities=[1,2]", "modalities must be a list of distinct modality names"),
    ],
)
def test_wrong_types_and_non_finite_settings_are_refused_without_a_traceback(tmp_path, capsys, item, message):
    assert main(["train", "--dataset", "cg-digits", "--set", item, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_labels_outside_the_classes_or_a_single_class_are_refused():
    import dataclasses

    import torch

    from conftest import tiny_colored_data
    from greedymm.data.base import check_labels

    data = tiny_colored_data()  # 4 classes in every split
    assert check_labels(data) == []
    bad = dataclasses.replace(data, num_classes=3)  # labels run to 3
    with pytest.raises(ValueError, match=r"^tiny: train labels run from 0 to 3, outside the 3 classes 0..2; fix the "):
        check_labels(bad)  # the split is named, and the fix

    class NoItems:  # a split type of one's own that can be empty (greedymm's own splits refuse to be)
        labels = torch.zeros(0, dtype=torch.long)

        def __len__(self) -> int:
            return 0

    empty = dataclasses.replace(data, val=NoItems())
    with pytest.raises(ValueError, match="tiny: the val split is empty; check the data files and val_fraction"):
        check_labels(empty)
    one = dataclasses.replace(data, train=dataclasses.replace(data.train, labels=torch.zeros_like(data.train.labels)))
    with pytest.raises(ValueError, match="a single class"):
        check_labels(one)
    few = dataclasses.replace(data, test=dataclasses.replace(data.test, labels=data.test.labels.clamp(max=2)))
    assert check_labels(few) == ["tiny: the test split holds 3 of the 4 classes"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--device", "cuda"], "no CUDA GPU is visible to this torch"),
        (["--device", "tpu:x"], "is not a device torch knows"),
        (["--out", "{file}"], "is a file, not a run folder"),
        (["--out", "/proc/greedymm-run"], "choose a folder you can write to"),
    ],
    ids=["missing-gpu", "unknown-device", "file-as-out", "unwritable-out"],
)
def test_devices_and_folders_that_cannot_work_are_refused_without_a_traceback(tmp_path, capsys, extra, message):
    import torch

    if extra[:2] == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    (tmp_path / "file").write_text("not a folder")
    extra = [x.replace("{file}", str(tmp_path / "file")) for x in extra]
    out = [] if "--out" in extra else ["--out", str(tmp_path / "r")]
    assert main(["train", "--dataset", "cg-digits", "--epochs", "1", *extra, *out, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def _cg_mnist_folder(root, **labels):
    """A cg-mnist data folder of IDX files (20 items a class in train, 4 in test) with ``labels`` set by
    (split, index): e.g. train=(5, 12) puts label 12 at index 5 of the training labels."""
    import numpy as np

    from greedymm.data.idx import MNIST_FILES, write_idx

    folder = root / "cg-mnist"
    folder.mkdir(parents=True)
    arrays = {
        "train_images": np.full((200, 28, 28), 200, np.uint8),
        "train_labels": (np.arange(200) % 10).astype(np.uint8),
        "test_images": np.full((40, 28, 28), 200, np.uint8),
        "test_labels": (np.arange(40) % 10).astype(np.uint8),
    }
    for split, (index, value) in labels.items():
        arrays[f"{split}_labels"][index] = value
    for key, name in MNIST_FILES.items():
        write_idx(folder / name, arrays[key])
    return folder


@pytest.mark.parametrize(
    "split, file", [("test", "t10k-labels-idx1-ubyte.gz"), ("train", "train-labels-idx1-ubyte.gz")]
)
def test_a_label_outside_a_fixed_class_count_is_refused_naming_the_file_and_index(tmp_path, capsys, split, file):
    """MNIST has 10 classes: a label 15 in the test split (which once grew the classifier to 16 classes) or 12 in
    the training split (which once failed in the color palette) is refused, naming the file and the index."""
    from greedymm.data import load_dataset

    _cg_mnist_folder(tmp_path, **{split: (7, 15 if split == "test" else 12)})
    with pytest.raises(DataFormatError, match=rf"{file}: label {15 if split == 'test' else 12} at index 7 is outside"):
        load_dataset("cg-mnist", data_dir=tmp_path)
    argv = ["train", "--dataset", "cg-mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")]
    assert main([*argv, "--epochs", "1", "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert file in err and "the 10 classes 0..9" in err and "Traceback" not in err


def test_a_fixed_class_count_holds_even_when_a_split_lacks_classes(tmp_path):
    from greedymm.data import load_dataset
    from greedymm.data.colored import make_colored_data

    _cg_mnist_folder(tmp_path)
    assert load_dataset("cg-mnist", data_dir=tmp_path).num_classes == 10
    x, y = torch.zeros(40, 8, 8, dtype=torch.uint8), torch.arange(40) % 4  # four classes present, ten declared
    assert make_colored_data("d", x, y, x, y, {}, val_fraction=0.25, num_classes=10).num_classes == 10
    with pytest.raises(ValueError, match=r"d: train label 12 at index 3 is outside the 10 classes 0..9"):
        make_colored_data("d", x, torch.where(torch.arange(40) == 3, 12, y), x, y, {}, num_classes=10)


def test_loading_another_methods_state_names_the_method_and_the_missing_part(tmp_path, capsys):
    """A guided state without its re-balancing counter (a vanilla checkpoint, say) is refused by name, and a run
    folder whose last.pt came from a run of another method says so, instead of a bare `error: remaining`."""
    import shutil

    from greedymm.methods import create_method

    with pytest.raises(ValueError, match=r"guided: the saved method state lacks 'remaining' \(it holds: mode\)"):
        create_method("guided").load_state_dict({"mode": "regular"})
    data = tiny_colored_data()
    fit(cfg(method="vanilla", epochs=1), tmp_path / "v", progress=False, data=data)
    fit(cfg(method="guided", epochs=1), tmp_path / "g", progress=False, data=data)
    shutil.copy(tmp_path / "v" / "last.pt", tmp_path / "g" / "last.pt")
    with pytest.raises(RuntimeError, match=r"last.pt was written by a 'vanilla' run; .*config.json says 'guided'"):
        fit(cfg(method="guided", epochs=2), tmp_path / "g", resume=True, progress=False, data=data)


def test_a_checkpoint_missing_parts_of_a_run_is_named(tmp_path):
    from greedymm.run import RunError, build_run

    run = build_run(cfg(), tiny_colored_data())
    state = run.state_dict()
    del state["epoch_stats"], state["perfect_epochs"]
    with pytest.raises(RunError, match=r"lacks perfect_epochs, epoch_stats: it is not a checkpoint of `greedymm"):
        run.load_state_dict(state)


def test_weights_that_do_not_fit_the_network_give_a_short_message(tmp_path, capsys):
    """Weights of another network (another width here) in a run folder: a few lines naming the first differing
    tensors and the likely causes, not torch's dump of every tensor."""
    from greedymm.run import evaluate_checkpoint

    data = tiny_colored_data()
    fit(cfg(epochs=1), tmp_path / "a", progress=False, data=data)
    fit(cfg(epochs=1, width=0.5), tmp_path / "b", progress=False, data=data)
    state = load_checkpoint(tmp_path / "a" / "best.pt")
    state["model"] = load_checkpoint(tmp_path / "b" / "best.pt")["model"]
    save_checkpoint(tmp_path / "a" / "best.pt", state)
    with pytest.raises(RuntimeError) as info:
        evaluate_checkpoint(tmp_path / "a", data=data)
    msg = str(info.value)
    assert "best.pt" in msg and "shapes differ for" in msg and "--width" in msg
    assert "size mismatch for" not in msg and len(msg) < 900 and msg.count("(+") == 1


def test_a_split_setting_given_as_a_data_option_is_refused_with_the_fix(tmp_path, capsys):
    argv = ["train", "--dataset", "cg-digits", "--set", "data.val_fraction=0.2", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--set val_fraction=0.2" in err and "Traceback" not in err
    with pytest.raises(ValueError, match="data_seed is a setting of its own"):
        cfg(data_options={"data_seed": 3})


def test_a_protocol_whose_data_options_the_data_set_lacks_is_refused_before_any_run(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "--protocol", "pmr-protocol", "--datasets", "synthetic", "--methods", "vanilla", "--seeds", "0"]
    assert main([*argv, "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "synthetic takes no options ['arch', 'colors']" in err and "pmr-protocol" in err
    assert not out.exists() or not any(out.iterdir())
