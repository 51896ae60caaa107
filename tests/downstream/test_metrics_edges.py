"""Metric edge cases with known answers: AUROC on large logits, grounding scores on flat
maps, Dice averaged per batch as the published segmentation numbers were."""

from __future__ import annotations

import numpy as np
import pytest

from cmcgns_cli.downstream.grounding import summarise
from cmcgns_cli.downstream.grounding_metrics import (
    cnr,
    iou_at_thresholds,
    pointing_game,
    undefined_reasons,
)
from cmcgns_cli.downstream.linear import score
from cmcgns_cli.downstream.tasks import ClsTask
from cmcgns_cli.metrics import dice_batch_mean


def _binary_task() -> ClsTask:
    return ClsTask("rsna-cls", "rsna", "binary", "macro_auroc")


def test_auroc_of_large_logits_is_one() -> None:
    # labels [0, 1], logits [17, 18]: the positive ranks above, AUROC 1. In float32 both
    # sigmoids round to 1.0 and would tie (AUROC 0.5).
    logits = np.array([[17.0], [18.0]], dtype=np.float32)
    assert (1 / (1 + np.exp(-logits))).tolist() == [[1.0], [1.0]]  # the tie, as float32
    got = score(_binary_task(), np.array([[0.0], [1.0]]), logits, ["opacity"])
    assert got["macro_auroc"] == 1.0


def _region() -> np.ndarray:
    r = np.zeros((1, 4, 4), bool)
    r[0, :2, :2] = True
    return r


def test_cnr_null_on_constant_map() -> None:
    # 0.37 over a 5-pixel region and 11 pixels outside: the two means and variances pick
    # up rounding noise of the same size, and a plain formula returns CNR 1.0
    region = _region()
    region[0, 2, 0] = True
    maps = np.full((1, 4, 4), 0.37)
    assert np.isnan(cnr(maps, region)[0])
    assert undefined_reasons(maps, region)["cnr"] == ["constant map"]


def test_cnr_null_on_two_flat_levels() -> None:
    maps = np.where(_region(), 0.7, 0.1)  # flat inside, flat outside: no noise at all
    assert np.isnan(cnr(maps, _region())[0])
    assert undefined_reasons(maps, _region())["cnr"] == ["flat inside and outside the region"]
    # one pixel of spread outside makes it defined again:
    # inside 0.7 (var 0), outside 11 x 0.1 and one 0.2: mean 0.1083.., var 0.000763..
    maps[0, 3, 3] = 0.2
    out = np.full(12, 0.1)
    out[-1] = 0.2
    expected = abs(0.7 - out.mean()) / np.sqrt(out.var())
    assert cnr(maps, _region())[0] == pytest.approx(expected)
    assert undefined_reasons(maps, _region())["cnr"] == [None]


def test_pointing_game_ties_and_constant_map() -> None:
    region = _region()
    tied = np.zeros((1, 4, 4))
    tied[0, 0, 0] = tied[0, 3, 3] = tied[0, 3, 2] = tied[0, 1, 1] = 1.0  # 2 of 4 peaks inside
    assert pointing_game(tied, region)[0] == pytest.approx(0.5)
    assert np.isnan(pointing_game(np.ones((1, 4, 4)), region)[0])
    assert np.isnan(iou_at_thresholds(np.ones((1, 4, 4)), region)).all()


def test_grounding_summary_leaves_undefined_out_and_counts_them() -> None:
    from cmcgns_cli.downstream.grounding import score_items

    region = np.repeat(_region(), 3, axis=0)
    good = np.where(_region()[0], 1.0, 0.0) + np.arange(16).reshape(4, 4) * 0.01
    maps = np.stack([good, np.full((4, 4), 0.3), np.where(_region()[0], 0.7, 0.1)])
    scores = score_items(maps, region)
    summary = summarise(scores, scores, ["a", "a", "a"], n_boot=20)
    m = summary["metrics"]
    assert m["cnr"] == pytest.approx(cnr(maps[:1], region[:1])[0])  # only the first image
    assert m["cnr_n"] == 1.0 and m["pointing_game_n"] == 2.0 and m["miou_n"] == 2.0
    assert summary["undefined"]["cnr"] == {
        "constant map": 1, "flat inside and outside the region": 1,
    }  # fmt: skip
    assert summary["undefined"]["pointing_game"] == {"constant map": 1}


def test_dice_mean_of_batch_means() -> None:
    # 5 images at batch size 2: batches [1, 0], [1, 1], [0] -> (0.5 + 1 + 0) / 3 = 0.5,
    # while the per-image mean is 3 / 5 = 0.6
    per_image = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    assert dice_batch_mean(per_image, 2) == pytest.approx(0.5)
    assert dice_batch_mean(per_image, 5) == pytest.approx(0.6)
    assert np.isnan(dice_batch_mean(np.zeros(0), 16))
    with pytest.raises(ValueError):
        dice_batch_mean(per_image, 0)


def test_model_card_names_each_rule_and_image_count(tmp_path) -> None:
    import json

    from cmcgns_cli.card import _rule_lines, find_results

    run = tmp_path / "run"
    (run / "det").mkdir(parents=True)
    body = {
        "task": "rsna-det", "metric": "map", "value": 0.5,
        "metrics": {"map": 0.5, "map_images_scored": 7, "map_coco": 0.4,
                    "map_coco_images_scored": 10},
        "metric_rules": {"map": "the published evaluation", "map_coco": "pycocotools"},
        "protocol": {"encoder": {"checkpoint": None}},
    }  # fmt: skip
    (run / "det" / "metrics.json").write_text(json.dumps(body))
    lines = _rule_lines(find_results(run))
    assert "- rsna-det `map` (7 test images scored): the published evaluation" in lines
    assert "- rsna-det `map_coco` (10 test images scored): pycocotools" in lines
