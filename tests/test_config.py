"""The configuration: one resolver (data-set defaults -> protocol -> overrides), declared hyper-parameter specs,
choice sets defined once, and run-folder hashes that stay what they were before the resolver existed."""

import ast
import json
from pathlib import Path

import pytest

from greedymm import choices
from greedymm.config import DATASET_DEFAULTS, PROTOCOLS, TrainConfig, format_sets, parse_set, resolve_config
from greedymm.methods import HParam, list_methods, method_class
from greedymm.reproduce import REPRODUCE, _merge
from greedymm.sweep import HASHED_ALWAYS, RecordingLauncher, plan_sweep, run_hash, run_sweep

# Folder names computed with the code from before the resolver (its hand-listed LATER_SETTINGS): (datasets,
# methods, seeds, --set items, epochs, protocol, names). The first two are finished sweeps of that code:
# `greedymm sweep --datasets cg-digits --methods vanilla guided vanilla@concat --seeds 0 --epochs 1` and
# `greedymm sweep --preset pmr-protocol --datasets cg-digits --methods vanilla --seeds 0 --epochs 1`.
OLD_SWEEPS = [
    (
        ["cg-digits"],
        ["vanilla", "guided", "vanilla@concat"],
        [0],
        [],
        1,
        None,
        ["cg-digits_vanilla_s0_91e0471c", "cg-digits_guided_s0_30cfd24c", "cg-digits_vanilla-concat_s0_9504ddd0"],
    ),
    (
        ["cg-digits"],
        ["vanilla"],
        [0],
        [],
        1,
        "pmr-protocol",
        ["cg-digits-pmr-protocol_vanilla_s0_52fa46c2"],
    ),
    (
        ["cg-digits", "cg-mnist"],
        ["vanilla", "guided", "ogm-ge@concat", "pmr@concat"],
        [0, 1],
        # schedule=none: cg-mnist's defaults gained the cosine schedule after these folders were named (a different
        # run, so a different name); with it set back, the resolved configs, and so the names, are the old ones
        ["alpha=0.1", "precision=bf16", "modalities=gray", "schedule=none"],
        None,
        None,
        [
            "cg-digits_vanilla_s0_acbcae9c",
            "cg-digits_vanilla_s1_4303008b",
            "cg-digits_guided_s0_189a79c3",
            "cg-digits_guided_s1_99754e7b",
            "cg-digits_ogm-ge-concat_s0_c80a2fcb",
            "cg-digits_ogm-ge-concat_s1_c5d5ff97",
            "cg-digits_pmr-concat_s0_9006723e",
            "cg-digits_pmr-concat_s1_11d38f91",
            "cg-mnist_vanilla_s0_609d9fec",
            "cg-mnist_vanilla_s1_271a22d1",
            "cg-mnist_guided_s0_66f2c350",
            "cg-mnist_guided_s1_0ea042ee",
            "cg-mnist_ogm-ge-concat_s0_610278f2",
            "cg-mnist_ogm-ge-concat_s1_b8c070f9",
            "cg-mnist_pmr-concat_s0_671fbd34",
            "cg-mnist_pmr-concat_s1_f1fbb796",
        ],
    ),
    (
        ["cg-digits"],
        ["guided", "random"],
        [2],
        ["Q=3", "lr=0.01", "warmup_epochs=2", "data.colors=pmr", "channels_last=true", "pairwise_utilization=true"],
        5,
        None,
        ["cg-digits_guided_s2_aed42299", "cg-digits_random_s2_37c5d57a"],
    ),
    (
        ["synthetic"],
        ["vanilla@sum", "gblending@concat", "agm@concat", "mmpareto@concat", "mslr@concat", "uniform@concat"],
        [0],
        ["schedule=step", "step_size=10", "gamma=0.5", "width=0.5"],
        2,
        None,
        [
            "synthetic_vanilla-sum_s0_2c2401de",
            "synthetic_gblending-concat_s0_6c85442b",
            "synthetic_agm-concat_s0_7ca6f309",
            "synthetic_mmpareto-concat_s0_81ffdc86",
            "synthetic_mslr-concat_s0_710a8b1b",
            "synthetic_uniform-concat_s0_cdcaf63a",
        ],
    ),
    (
        [],
        ["pmr", "vanilla"],
        [0],
        ["precision=fp16", "fusion=sum"],
        None,
        "pmr-protocol",
        ["cg-mnist-pmr-protocol_pmr_s0_f774a5d3", "cg-mnist-pmr-protocol_vanilla_s0_18d0ca16"],
    ),
    (
        ["modelnet40", "nvgesture-standin"],
        ["vanilla"],
        [0],
        ["modalities=rgb"],
        None,
        None,
        ["modelnet40_vanilla_s0_97a5b2d0", "nvgesture-standin_vanilla_s0_cb3ea62d"],
    ),
]

OLD_REPRODUCE_QUICK = [
    (
        "modelnet40",
        [
            "modelnet40_vanilla_s0_3cbddb78",
            "modelnet40_vanilla_s1_211b9d9a",
            "modelnet40_guided_s0_b500a129",
            "modelnet40_guided_s1_a6cc3008",
            "modelnet40_random_s0_45f2e7a7",
            "modelnet40_random_s1_bbb0779e",
        ],
    ),
    (
        "nvgesture",
        [
            "nvgesture_vanilla_s0_6ed25f69",
            "nvgesture_vanilla_s1_5c364795",
            "nvgesture_guided_s0_c829c0d1",
            "nvgesture_guided_s1_26019ca3",
            "nvgesture_random_s0_f505f853",
            "nvgesture_random_s1_cbc1464a",
        ],
    ),
    (
        "cg-digits",
        [
            "cg-digits_vanilla_s0_1cd173d6",
            "cg-digits_vanilla_s1_9d8f64e3",
            "cg-digits_guided_s0_8c36d549",
            "cg-digits_guided_s1_692aaf9e",
            "cg-digits_random_s0_ec312522",
            "cg-digits_random_s1_afdc993c",
        ],
    ),
]


@pytest.mark.parametrize("datasets, methods, seeds, sets, epochs, protocol, names", OLD_SWEEPS)
def test_existing_sweep_folders_keep_their_names(tmp_path, datasets, methods, seeds, sets, epochs, protocol, names):
    jobs = plan_sweep(datasets, methods, seeds, tmp_path, sets, epochs, protocol_name=protocol)
    assert [j.name for j in jobs] == names


@pytest.mark.parametrize("name, names", OLD_REPRODUCE_QUICK)
def test_reproduce_quick_folders_keep_their_names(tmp_path, name, names):
    """`reproduce --quick` now passes structured overrides; they resolve to the configs its --set strings did."""
    st = REPRODUCE[name]
    overrides = _merge(st.overrides, st.quick_overrides)
    jobs = plan_sweep([st.dataset], st.methods, st.quick_seeds, tmp_path, (), st.quick_epochs, overrides=overrides)
    assert [j.name for j in jobs] == names


def test_a_finished_old_sweep_runs_nothing(tmp_path):
    """Folders named by the earlier code, marked done, are all skipped by the same sweep command now."""
    datasets, methods, seeds, sets, epochs, protocol, names = OLD_SWEEPS[0]
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "done").write_text("{}\n")
    launcher = RecordingLauncher()
    result = run_sweep(plan_sweep(datasets, methods, seeds, tmp_path, sets, epochs), launcher, echo=lambda s: None)
    assert len(result.skipped) == len(names) and not result.launched and not launcher.commands


def test_a_new_field_counts_only_when_changed():
    """Outside HASHED_ALWAYS a field is hashed only when it differs from its default, so adding a field (here
    simulated by the later fields precision and channels_last) leaves every earlier hash alone."""
    cfg = resolve_config("cg-digits", method="vanilla", epochs=1)
    assert {"precision", "channels_last", "fusion", "modalities"}.isdisjoint(HASHED_ALWAYS)
    assert run_hash(cfg) == run_hash(cfg.replace(precision="fp32", channels_last=False, device="cuda"))
    assert run_hash(cfg) != run_hash(cfg.replace(precision="bf16"))
    assert run_hash(cfg) != run_hash(cfg.replace(epochs=2))  # a field of the first release always counts


def test_the_same_setting_in_two_layers_takes_the_later_one():
    # --set beats a keyword; a user value equal to TrainConfig's own default still beats the data set's default
    assert resolve_config("cg-digits", lr=0.2, sets=["lr=0.5"]).lr == 0.5
    assert DATASET_DEFAULTS["modelnet40"]["momentum"] == 0.0 and TrainConfig().momentum == 0.9
    assert resolve_config("modelnet40", momentum=0.9).momentum == 0.9
    assert DATASET_DEFAULTS["mfeat"]["val_fraction"] == 0.2
    assert resolve_config("mfeat", sets=["val_fraction=0.1"]).val_fraction == 0.1
    # a hyper-parameter and a data option given both ways: the --set item wins, key by key
    assert resolve_config("cg-digits", method="guided", hparams={"Q": 2, "alpha": 0.1}, sets=["Q=3"]).hparams == {
        "Q": 3, "alpha": 0.1}  # fmt: skip
    vqa = resolve_config("easy-vqa", data_options={"image_size": 32}, sets=["data.image_size=64"])
    assert vqa.data_options["image_size"] == 64
    # resuming from a saved config: the data set's defaults are not applied again over it
    saved = resolve_config("mfeat").to_dict()
    again = resolve_config(base=saved, sets=["lr=0.5"], epochs=3)
    assert (again.val_fraction, again.optimizer, again.lr, again.epochs) == (0.2, "adam", 0.5, 3)


def test_layers_in_order(monkeypatch):
    """data set defaults -> protocol -> keyword overrides -> --set items; dict settings merge key by key."""
    plain = resolve_config("modelnet40", method="vanilla")
    assert (plain.optimizer, plain.lr, plain.schedule, plain.val_fraction) == ("sgd", 0.1, "plateau", 0.2)
    # PMR's protocol with a data option NVGesture's loader takes (its own, colors and arch, are CG options)
    monkeypatch.setitem(PROTOCOLS, "pmr-nv", {**PROTOCOLS["pmr-protocol"], "data_options": {"arch": "i3d"}})
    cfg = resolve_config("nvgesture-standin", "pmr-nv", method="pmr", epochs=3, sets=["lr=0.5", "data.size=32"])
    assert cfg.val_fraction == 0.2  # the data set's default, which the protocol leaves alone
    assert (cfg.optimizer, cfg.schedule, cfg.fusion) == ("sgd", "step", "concat")  # the protocol's
    assert cfg.epochs == 3 and cfg.lr == 0.5  # overrides, then --set
    assert cfg.data_options == {"frames": 8, "size": 32, "arch": "i3d"}
    assert resolve_config(protocol="pmr-protocol").dataset == PROTOCOLS["pmr-protocol"]["dataset"]
    assert resolve_config().dataset == "cg-mnist"
    tuned = resolve_config("cg-digits", method="guided", hparams={"alpha": 0.1}, sets=["Q=3"])
    assert tuned.hparams == {"alpha": 0.1, "Q": 3}
    saved = tuned.replace(epochs=5).to_dict()
    resumed = resolve_config(base=saved, epochs=7)
    assert resumed == tuned.replace(epochs=7)  # a resumed run keeps its settings; only what is given changes
    for name, defaults in DATASET_DEFAULTS.items():
        cfg = resolve_config(name)
        assert all(getattr(cfg, k) == v for k, v in defaults.items())


def test_structured_overrides_round_trip_through_set_items():
    overrides = {"width": 0.25, "optimizer": "adam", "modalities": ["gray"], "data_options": {"frames": 8}}
    config, hparams = parse_set(list(format_sets(overrides)), {})
    assert config == overrides and hparams == {}


def test_bad_settings_name_the_fix():
    with pytest.raises(ValueError, match=r"guided: Q must be an integer >= 1, got 0 \(default 5: --set Q=5"):
        resolve_config("cg-digits", method="guided", sets=["Q=0"])
    with pytest.raises(ValueError, match=r"--set Q: expected int \(an integer >= 1\), got '2.5'"):
        resolve_config("cg-digits", method="guided", sets=["Q=2.5"])
    with pytest.raises(ValueError, match="unknown protocol 'pmr-protocl'.*Did you mean 'pmr-protocol'"):
        resolve_config("cg-digits", "pmr-protocl")
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_config("cg-digits", precision="fp8")
    with pytest.raises(ValueError, match="has no hyper-parameter 'Q'"):
        resolve_config("cg-digits", method="vanilla", hparams={"Q": 3})
    assert resolve_config("cg-digits", method="guided", sets=["alpha=1"]).hparams == {"alpha": 1.0}
    with pytest.raises(ValueError, match="unknown setting 'epoch'.*Did you mean 'epochs'"):
        resolve_config("cg-digits", epoch=3)


@pytest.mark.parametrize("name", list_methods())
def test_every_method_declares_valid_specs(name):
    """Every registered method's hyper-parameters are specs whose defaults pass their own checks."""
    cls = method_class(name)
    assert all(isinstance(spec, HParam) for spec in cls.hparams.values())
    cls.check_hparams(cls.defaults())
    assert len(cls.describe_hparams()) == len(cls.hparams)
    for key, spec in cls.hparams.items():
        assert spec.accepts(spec.default)
        if spec.kind in (int, float):
            with pytest.raises(ValueError, match=f"{name}: {key} must be"):
                cls.check_hparams({key: "text"})


def test_a_plain_default_is_read_as_a_spec():
    from greedymm.methods import Method

    class Custom(Method):
        hparams = {"beta": 0.5, "spec": HParam(2, "steps", low=1)}

    assert Custom.hparams["beta"] == HParam(0.5) and Custom.defaults() == {"beta": 0.5, "spec": 2}
    with pytest.raises(ValueError, match="beta must be a finite number"):
        Custom.check_hparams({"beta": float("nan")})
    with pytest.raises(ValueError, match="spec must be an integer >= 1"):
        Custom.check_hparams({"spec": 0})


def test_choices_are_defined_once():
    from greedymm.models import FUSIONS
    from greedymm.precision import PRECISIONS

    assert FUSIONS == choices.FUSIONS and PRECISIONS == choices.PRECISIONS
    for name, values in choices.CHOICES.items():
        assert TrainConfig.__dataclass_fields__[name].default in values


def test_preset_is_a_deprecated_alias_of_protocol(capsys):
    from greedymm.cli import build_parser

    for command in (["train"], ["sweep", "--out", "x"]):
        new = build_parser().parse_args([*command, "--protocol", "pmr-protocol"])
        assert "deprecated" not in capsys.readouterr().err
        old = build_parser().parse_args([*command, "--preset", "pmr-protocol"])
        assert old.protocol == new.protocol == "pmr-protocol"
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--preset is deprecated; use --protocol" in err


def test_help_and_list_come_from_the_registries(capsys):
    from greedymm.cli import build_parser, main

    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(m in text for m in list_methods()) and all(f in text for f in choices.FUSIONS)
    assert "Q=5 (an integer >= 1): re-balancing steps" in text  # the specs, in the epilog
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert all(p in listed for p in PROTOCOLS) and "Q=5 (an integer >= 1)" in listed
    from greedymm.config import DATASET_DEFAULTS, DEFAULTS_CHOSEN

    assert set(DEFAULTS_CHOSEN) <= set(DATASET_DEFAULTS)  # a note for a data set that has no defaults is a typo
    assert all(f"chosen: {why}" in listed for why in DEFAULTS_CHOSEN.values())
    for values in choices.CHOICES.values():
        assert " | ".join(values) in listed


def test_run_module_does_not_import_the_package_init():
    import greedymm
    from greedymm.version import __version__

    assert greedymm.__version__ == __version__
    tree = ast.parse((Path(greedymm.__file__).parent / "run.py").read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1 and n.module is None]


def test_version_is_the_package_metadata():
    from importlib.metadata import version

    import greedymm

    assert version("greedymm") == greedymm.__version__
    assert json.dumps(greedymm.__version__)


def test_a_missing_extra_names_the_install_command(monkeypatch):
    import sys

    from greedymm.data.optional import MissingExtra, optional_module

    for module, extra in (("cv2", "video"), ("trimesh", "mesh")):
        monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
        lazy = optional_module(module)
        with pytest.raises(MissingExtra, match=rf"pip install 'greedymm\[{extra}\]'"):
            getattr(lazy, "anything")  # noqa: B009  (the attribute read is what imports)


@pytest.mark.process
def test_core_install_needs_no_extra(tmp_path):
    """Without OpenCV and trimesh the package, the CLI and the CG sets work; a video data set names its extra."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['cv2'] = None; sys.modules['trimesh'] = None\n"
        "import greedymm, greedymm.cli\n"
        "from greedymm.data import load_dataset\n"
        "assert len(load_dataset('cg-digits').train) > 0\n"
        "from greedymm.data.nvgesture_standin import make_nvgesture_standin\n"
        f"sys.exit(greedymm.cli.main(['data', 'make', 'nvgesture-standin', '--data-dir', {str(tmp_path)!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'greedymm[video]'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("key", ["val_fraction", "data_seed", "data_dir"])
def test_a_split_setting_is_not_a_data_option(key):
    """`--set data.val_fraction=0.2` once reached the loader twice (a TypeError traceback): the split settings are
    config fields, and the message names the --set item to write instead."""
    with pytest.raises(ValueError, match=rf"{key} is a setting of its own: write --set {key}=0.2"):
        resolve_config("cg-digits", sets=[f"data.{key}=0.2"])
    with pytest.raises(ValueError, match=rf"{key} is a setting of its own"):
        resolve_config("cg-digits", data_options={key: 0.2})


def test_data_options_a_data_set_does_not_take_are_refused_when_the_config_is_made():
    """A protocol made for one data set, run on another whose loader lacks its options, is refused when the config
    is resolved (a sweep resolves every job's before it starts any), naming the options and the protocol."""
    with pytest.raises(ValueError, match=r"synthetic takes no options \['arch', 'colors'\] \(set by protocol"):
        resolve_config("synthetic", "pmr-protocol")
    with pytest.raises(ValueError, match=r"cg-digits takes no options \['frames'\]; its options are"):
        resolve_config("cg-digits", sets=["data.frames=8"])
    assert resolve_config("cg-digits", "pmr-protocol").data_options == {"colors": "pmr", "arch": "pmr-convnet"}
    assert resolve_config("npz:/nowhere/x.npz", sets=["data.classes=3"]).data_options == {"classes": 3}
