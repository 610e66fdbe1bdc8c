"""A run folder is portable and knows what it was trained on: another device or data folder resumes it; other data
or another model is refused by `eval` and `--resume`, naming what differs and how to pass the run's own."""

import json

import pytest
import torch

from conftest import tiny_colored_data
from greedymm.checkpoint import load_checkpoint, save_checkpoint
from greedymm.cli import main
from greedymm.config import TrainConfig
from greedymm.data import load_dataset
from greedymm.models import build_model
from greedymm.run import RunError, evaluate_checkpoint
from greedymm.sweep import run_hash
from greedymm.train import fit

# a small generated data set any process can rebuild from its config (the CLI's `eval` and `--resume` do)
SMALL = {"size": 96, "test_size": 32, "classes": 4, "image_size": 12}


def cfg(**kw):
    base = dict(
        dataset="tiny", method="vanilla", epochs=1, batch_size=16, optimizer="adam", lr=3e-3, width=0.25, device="cpu"
    )
    return TrainConfig(**{**base, **kw})


def _config_json(folder):
    return json.loads((folder / "config.json").read_text())


def test_a_run_records_its_data_and_eval_and_resume_refuse_other_data(tmp_path, capsys):
    """fit(..., data=...) on data of the config's shape (the config's generated set from another data seed): the
    CLI would rebuild the config's data and evaluate / continue on it; the recorded fingerprint refuses that."""
    mine = load_dataset("synthetic", val_fraction=0.25, data_seed=1, **SMALL)
    c = cfg(dataset="synthetic", val_fraction=0.25, data_options=SMALL)
    out = tmp_path / "r"
    fit(c, out, progress=False, data=mine)
    data = _config_json(out)["trained_on"]["data"]
    assert data["name"] == "synthetic" and data["given"] is True and data["num_classes"] == 4
    n = {s: len(getattr(mine, s)) for s in ("train", "val", "test")}
    assert {s: data["splits"][s]["items"] for s in n} == n == {"train": 72, "val": 24, "test": 32}
    assert data["splits"]["train"]["shapes"] == {"m0": [1, 12, 12], "m1": [1, 12, 12]}

    assert main(["eval", str(out)]) == 2
    err = capsys.readouterr().err
    assert "trained on other data" in err and "labels" in err and "evaluate_checkpoint(" in err
    assert not (out / "eval_best.json").exists()
    assert main(["train", "--resume", str(out), "--epochs", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "trained on other data" in err and "fit(cfg, out, resume=True, data=" in err
    assert len((out / "results.jsonl").read_text().splitlines()) == 1  # nothing appended

    # the run's own data: both work, in Python
    assert evaluate_checkpoint(out, data=mine)["test"]["n"] == n["test"]
    fit(c.replace(epochs=2), out, resume=True, progress=False, data=mine)
    assert len((out / "results.jsonl").read_text().splitlines()) == 2


def test_data_passed_in_python_under_an_unregistered_name_names_the_fix(tmp_path, capsys):
    data = tiny_colored_data()
    out = tmp_path / "r"
    fit(cfg(), out, progress=False, data=data)
    assert main(["eval", str(out)]) == 2
    err = capsys.readouterr().err
    assert "data passed in Python" in err and "evaluate_checkpoint(" in err and "Traceback" not in err
    with pytest.raises(RunError, match=r"labels of the train split differ"):
        other = tiny_colored_data(seed=1)
        other.train.labels[:] = other.train.labels.flip(0)
        fit(cfg(epochs=2), out, resume=True, progress=False, data=other)
    with pytest.raises(RunError, match=r"train split: 72 items when trained, 48 now"):
        fit(cfg(epochs=2), out, resume=True, progress=False, data=tiny_colored_data(n_train=64))


def test_a_run_of_your_own_model_records_it_and_refuses_another(tmp_path, capsys):
    data = tiny_colored_data()
    c = cfg(dataset="cg-digits")

    def own(width):  # not the network the config names (width 0.25): the user's own
        torch.manual_seed(0)
        return build_model("small-cnn", data.modalities, data.in_channels, data.num_classes, width=width)

    out = tmp_path / "r"
    fit(c, out, progress=False, data=data, model=own(0.5))
    model = _config_json(out)["trained_on"]["model"]
    assert model["given"] is True and model["class"] == "MMTMNet"
    for argv in (["eval", str(out)], ["train", "--resume", str(out), "--epochs", "2", "--no-progress"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "your own model (MMTMNet)" in err and "model=" in err and "size mismatch" not in err
    with pytest.raises(RunError, match=r"its parameters differ"):
        fit(c.replace(epochs=2), out, resume=True, progress=False, data=data, model=own(0.75))
    fit(c.replace(epochs=2), out, resume=True, progress=False, data=data, model=own(0.5))
    assert evaluate_checkpoint(out, "last", data=data, model=own(0.5))["epoch"] == 1


def test_a_folder_from_before_the_record_still_evaluates_and_resumes(tmp_path):
    data = tiny_colored_data()
    out = tmp_path / "r"
    fit(cfg(), out, progress=False, data=data)
    saved = _config_json(out)
    del saved["trained_on"]
    (out / "config.json").write_text(json.dumps(saved))
    assert evaluate_checkpoint(out, data=data)["epoch"] == 0
    fit(cfg(epochs=2), out, resume=True, progress=False, data=data)
    assert "trained_on" in _config_json(out)  # recorded from now on


def test_a_damaged_record_is_refused_naming_the_file(tmp_path):
    data = tiny_colored_data()
    out = tmp_path / "r"
    fit(cfg(), out, progress=False, data=data)
    saved = _config_json(out)
    saved["trained_on"]["data"]["splits"] = ["train"]
    (out / "config.json").write_text(json.dumps(saved))
    with pytest.raises(RunError, match=r"config.json: its \"trained_on\" record is damaged"):
        evaluate_checkpoint(out, data=data)


def _as_if_trained_on_a_gpu(out):
    saved = _config_json(out)
    saved["config"]["device"] = "cuda"
    saved["config"]["data_dir"] = "/mnt/gpu-box/data"
    (out / "config.json").write_text(json.dumps(saved))
    for name in ("last.pt", "best.pt"):
        state = load_checkpoint(out / name)
        state["config"].update(device="cuda", data_dir="/mnt/gpu-box/data")
        save_checkpoint(out / name, state)


def test_a_gpu_run_resumes_and_evaluates_on_a_cpu_with_its_data_elsewhere(tmp_path, capsys):
    """Where a run executes (device) and where its data lives (data_dir) do not change its numbers: they neither
    block --resume nor change a sweep's folder name, and the resumed run equals an uninterrupted one."""
    c = cfg(dataset="synthetic", val_fraction=0.25, data_options=SMALL)
    assert run_hash(c) == run_hash(c.replace(device="cuda", data_dir="/elsewhere"))
    whole, out = tmp_path / "whole", tmp_path / "r"
    fit(c.replace(epochs=2), whole, progress=False)
    fit(c, out, progress=False)
    _as_if_trained_on_a_gpu(out)
    if not torch.cuda.is_available():
        assert main(["eval", str(out)]) == 2
        assert "--device cpu" in capsys.readouterr().err
    assert main(["eval", str(out), "--device", "cpu"]) == 0
    assert (out / "eval_best.json").exists()
    argv = ["train", "--resume", str(out), "--epochs", "2", "--device", "cpu", "--data-dir", str(tmp_path / "moved")]
    assert main([*argv, "--no-progress"]) == 0, capsys.readouterr().err
    assert (out / "steps.csv").read_text() == (whole / "steps.csv").read_text()
    first, second = ((p / "results.jsonl").read_text().splitlines() for p in (out, whole))
    assert [json.loads(x)["test"] for x in first] == [json.loads(x)["test"] for x in second]
    # a setting that changes the numbers still blocks resume
    assert main(["train", "--resume", str(out), "--epochs", "3", "--lr", "0.1", "--no-progress"]) == 2
    assert "different config" in capsys.readouterr().err


def test_checkpoint_tensors_follow_the_run_to_its_device(tmp_path):
    """A checkpoint loads to the CPU (map_location) and every tensor the loop keeps adding to goes to the run's
    device: the epoch's running sums of a GPU-trained run come back on the device the run resumes on."""
    from greedymm.run import build_run

    data = tiny_colored_data()
    run = build_run(cfg(), data)
    state = run.state_dict()
    state["epoch_stats"] = torch.tensor([1.0, 2.0, 3.0, 0.0], dtype=torch.float64)
    run.device = torch.device("meta")  # stands for a device other than the checkpoint's (cpu)
    run.load_state_dict(state)
    assert run.epoch_stats.device.type == "meta" and run.epoch_stats.dtype == torch.float64
