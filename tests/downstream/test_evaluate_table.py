"""The evaluate table's interval caption: under the published detection rule each key
resamples its own image set, and a key with no scored image says so."""

from __future__ import annotations

from cmcgns_cli.downstream.results_table import results_table as _table


def _summary(per_metric):
    return {
        "seeds": [0],
        "mean": {"map": None, "map_coco": 0.25},
        "std": {"map": None, "map_coco": None},
        "ci95": {"map": None, "map_coco": [0.1, 0.4]},
        "ci95_method": per_metric["map"] if per_metric else {},
        "ci95_method_per_metric": per_metric,
    }


def test_caption_names_each_keys_interval_and_the_images_it_resampled() -> None:
    per = {
        "map": {"method": "none: no image scored", "images": 0},
        "map_coco": {
            "method": "bootstrap percentile",
            "resamples": 1000,
            "seed": 0,
            "stratified_by": "has_box",
            "images": 24,
        },
    }
    caption = _table("rsna-det", _summary(per)).caption
    assert caption == (
        "95% CI of map: none: no image scored; 95% CI of map_coco: bootstrap percentile, "
        "1000 resamples of 24 images, seed 0, stratified by has_box"
    )
    assert "None" not in caption


def test_a_single_method_keeps_the_old_caption() -> None:
    summary = _summary({})
    summary["ci95_method_per_metric"] = None
    summary["ci95_method"] = {
        "method": "bootstrap percentile",
        "resamples": 1000,
        "seed": 0,
        "stratified_by": None,
    }
    caption = _table("chexpert-cls", summary).caption
    assert caption == "95% CI: bootstrap percentile, 1000 resamples, seed 0, stratified by nothing"
