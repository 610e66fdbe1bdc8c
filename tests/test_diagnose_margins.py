"""scripts/diagnose_margins.py: the numbers each rule compared with its line, read back from diagnosis.json."""

from __future__ import annotations

import json

import pytest

from conftest import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("diagnose_margins")


def _rule(rule, m, fired, **numbers):
    return {"rule": rule, "modality": m, "fired": fired, "numbers": numbers, "text": ""}


def _diagnosis():
    return {
        "verdict": "greedy-cannot-judge",
        "modalities": {"a": {"alone_test": {"mean": 0.85}}, "b": {"alone_test": {"mean": 0.5}}},
        "joint": {"val": {"mean": 0.9}, "test": {"mean": 0.6}},
        "rules": [
            _rule("ignored", "a", False, information=0.9, u_mean=0.40),
            _rule("ignored", "b", True, information=0.6, u_mean=0.01),
            # b's path keeps 0.2 of what b alone reaches, a's keeps 0.8: ratio 0.25, below the line of 0.5
            _rule("under-trained", "b", True, against="a", kept=0.2, other_kept=0.8, lower_in_every_seed=True),
            _rule("under-trained", "a", False, against="b", kept=0.8, other_kept=0.2, lower_in_every_seed=False),
            _rule("below-alone", "b", False, alone_minus_joint=-0.05),
        ],
    }


def test_margins_are_the_rules_own_numbers_and_the_share_ratio(script):
    rows = {r["modality"]: r for r in script.margins(_diagnosis())}
    assert rows["b"]["u"] == 0.01 and rows["b"]["ignored"] is True
    assert rows["b"]["ratio"] == pytest.approx(0.25) and rows["b"]["every_seed"] is True
    assert rows["a"]["ratio"] == pytest.approx(4.0) and rows["a"]["under_trained"] is False


def test_the_table_has_a_row_per_modality_naming_what_fired(script, tmp_path, capsys):
    (tmp_path / "case").mkdir()
    (tmp_path / "case" / "diagnosis.json").write_text(json.dumps(_diagnosis()))
    script.main([str(tmp_path / "case")])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 + 2
    # the test-differs numbers: 0.9 - 0.6 on validation against test; b alone 0.5 - 0.6 on test
    assert lines[3] == (
        "| case | greedy-cannot-judge | b | 0.60 | 0.010 | 0.25 | yes | -0.050 | ignored, under-trained | 0.900 | "
        "0.300 | -0.100 |"
    )


def test_a_folder_without_a_diagnosis_is_refused_by_name(script, tmp_path):
    with pytest.raises(SystemExit, match="no diagnosis.json"):
        script.main([str(tmp_path)])
