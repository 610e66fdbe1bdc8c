"""scripts/classical_baselines.py: its fixed features by hand, and a full run on tiny fetched wheels."""

from __future__ import annotations

import pytest
import torch

from conftest import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("classical_baselines")


def test_masked_sequence_features_ignore_the_padding(script):
    x = torch.tensor([[[1.0, 3.0, 99.0], [1.0, 1.0, 0.0]]])  # one channel: 1, 3, then padding; the mask last
    assert script.features("fsdd-mnist", "audio", x).tolist() == [[2.0, 1.0, 1.0, 3.0]]  # mean, std, min, max


def test_questions_become_word_counts_and_images_pixels(script):
    from greedymm.models import one_hot_tokens

    q = one_hot_tokens([[2, 0, 2]], 4, length=5)
    assert script.features("easy-vqa", "question", q).tolist() == [[1.0, 0.0, 2.0, 0.0]]
    img = torch.arange(8.0).reshape(1, 2, 2, 2)
    assert script.features("easy-vqa", "image", img).tolist() == [list(range(8))]


def test_a_run_on_a_tiny_wheel_scores_every_modality_and_all(script, tmp_path):
    from wheel_fixtures import fetched

    rows = script.run("fsdd-mnist", str(fetched("fsdd-mnist", tmp_path)), max_iter=200)
    assert [m for m, _ in rows] == ["audio", "image", "all"]
    for _, r in rows:
        assert r["C"] in script.CS and 0 <= r["test"] <= 1 and 0 <= r["val"] <= 1
    assert rows[0][1]["features"] == 52 and rows[1][1]["features"] == 784  # 13 MFCCs x 4 statistics; 28 x 28
