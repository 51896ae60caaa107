"""The synthetic chest X-ray world (phantoms, reports, labels) in six raw layouts.

`write_world(out, n, seed, layouts, image_size)` writes, under OUT:

- `mimic-cxr-jpg/`  MIMIC-CXR-JPG 2.0.0 + reports (n studies, 1-3 images each)
- `chexpert/CheXpert-v1.0-small/`  train.csv, valid.csv, train/, valid/ (n images)
- `rsna/`  stage_2_train_labels.csv, stage_2_detailed_class_info.csv, stage_2_train_images/
- `siim/`  train-rle.csv, dicom-images-train/<StudyUID>/<SeriesUID>/<ImageId>.dcm
- `covidx/`  train.txt, test.txt, train/, test/
- `object-cxr/`  train.csv, dev.csv, train/, dev/

Ground truth lives beside them (readers never see it):

- `truth/<layout>.jsonl`: one JSON object per image with
  `image_id` (mimic dicom_id, chexpert the Path value, rsna patientId, siim ImageId, covidx
  filename, object-cxr image_name), `width`, `height` (output pixels),
  `findings` ([{"name", "side", "zone", "severity"} (+ "kind" for devices/objects)]),
  `boxes` ([[x, y, w, h]] in original pixels), `box_labels`, and `label`:
  mimic / chexpert the CheXpert-14 dict (1.0 / 0.0 / -1.0 / null), rsna Target (0/1),
  siim 1 if the mask is non-empty, covidx the class string, object-cxr 1 if any object.
  Extra keys: mimic `study_id, subject_id, view, split, defect` and `sentences`
  ([{"text", "finding"}]: every sentence the report's FINDINGS / IMPRESSION uses (order not
  significant), with the finding it describes, or "normal"); chexpert `split, view`;
  rsna `class`; covidx `split`; object-cxr `split, types` (annotation type per object,
  in the same order as `boxes`).
- `truth/siim_masks/<ImageId>.png`: the drawn pneumothorax mask (0/255), image size.
- `ms-cxr/MS_CXR_Local_Alignment_v1.1.0.csv` (with mimic): the MS-CXR-style phrase-grounding
  boxes of the mimic test split, from the truth (see `synth/mscxr.py`).

Findings: cardiomegaly, widened_mediastinum, pleural_effusion, pneumothorax,
consolidation, pneumonia, covid, edema, atelectasis, nodule, mass, fracture,
pleural_thickening, support_device (kind et_tube, ng_tube, central_line, pacemaker,
ecg_leads), foreign_object (kind button, coin, necklace, clip). Side is the patient's
side (right = image left). Everything is drawn from `np.random` generators seeded with
(seed, layout id, index), so output is byte-identical for the same arguments and a layout's
files do not depend on which other layouts are written. Images are `image_size` px on the
longer side (default 512), RSNA and SIIM square at that size.
"""

from __future__ import annotations

from pathlib import Path

from cmcgns_cli import jsonio
from cmcgns_cli.errors import BadInputError

LAYOUTS = ("mimic", "chexpert", "rsna", "siim", "covidx", "object-cxr")
DEFAULT_SIZE = 512


def _writer(name: str):
    from cmcgns_cli.synth.layouts import chexpert, dicoms, mimic, others

    return {
        "mimic": mimic.write,
        "chexpert": chexpert.write,
        "rsna": dicoms.write_rsna,
        "siim": dicoms.write_siim,
        "covidx": others.write_covidx,
        "object-cxr": others.write_object_cxr,
    }[name]


def _check(
    n: int, layouts: list[str] | None, image_size: int | None, normal_share: float | None = None
) -> list[str]:
    if normal_share is not None and not 0.0 <= normal_share <= 1.0:
        raise BadInputError(f"--normal-share must be between 0 and 1 (got {normal_share})")
    if n < 1:
        raise BadInputError(f"--n must be at least 1 (got {n})")
    chosen = list(LAYOUTS) if not layouts else [x.strip() for x in layouts if x.strip()]
    bad = [x for x in chosen if x not in LAYOUTS]
    if bad or not chosen:
        raise BadInputError(f"unknown layout(s) {bad}: choose from {', '.join(LAYOUTS)}")
    if image_size is not None and not 64 <= image_size <= 8192:
        raise BadInputError(f"--image-size must be between 64 and 8192 (got {image_size})")
    return [x for x in LAYOUTS if x in chosen]


def write_world(
    out: Path,
    n: int,
    seed: int,
    layouts: list[str] | None = None,
    image_size: int | None = None,
    progress=None,
    normal_share: float | None = None,
) -> dict:
    """Write the chosen layouts (all six by default) and their truth; return counts.

    `normal_share`: None keeps the historical draws (byte-identical worlds); a value in
    [0, 1] is the share of MIMIC and CheXpert studies drawn with no finding and no device
    (see `common.general_findings`), recorded in the summary. Raises BadInputError on a
    bad n, layout, image size or share.
    """
    from cmcgns_cli.synth.common import write_truth

    chosen = _check(n, layouts, image_size, normal_share)
    size = image_size or DEFAULT_SIZE
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"out": str(out), "n": n, "seed": seed, "image_size": size, "layouts": {}}
    extra: dict = {}
    if normal_share is not None:  # absent by default: the default world's bytes stay as they were
        summary["normal_share"] = extra["normal_share"] = normal_share
    for name in chosen:
        tick = progress(name, n) if progress else None
        kw = extra if name in ("mimic", "chexpert") else {}
        truth, counts = _writer(name)(out, n, seed, size, tick, **kw)
        write_truth(out, name, truth)
        if name == "mimic":  # the MS-CXR-style grounding file of the test split
            from cmcgns_cli.synth.mscxr import write_mscxr

            counts = {**counts, "ms_cxr_boxes": write_mscxr(out, truth)}
        summary["layouts"][name] = counts
    (out / "truth").mkdir(exist_ok=True)
    on_disk = {k: v for k, v in summary.items() if k != "out"}  # same bytes wherever written
    (out / "truth" / "summary.json").write_text(jsonio.dumps(on_disk, indent=1) + "\n")
    return summary


def run_synth(
    *,
    out: Path,
    n: int,
    seed: int,
    layouts: list[str] | None,
    image_size: int | None,
    as_json: bool,
    normal_share: float | None = None,
) -> None:
    """CLI entry: write the world with a progress bar on stderr, the summary on stdout."""
    from rich.table import Table

    from cmcgns_cli.console import emit_json, progress
    from cmcgns_cli.console import out as stdout

    _check(n, layouts, image_size, normal_share)
    with progress() as bar:

        def start(name: str, total: int):
            task = bar.add_task(name, total=total)
            return lambda: bar.advance(task)

        summary = write_world(
            out, n, seed, layouts, image_size, progress=start, normal_share=normal_share
        )
    if as_json:
        emit_json(summary)
        return
    table = Table(title=f"synthetic world -> {out}")
    table.add_column("layout")
    table.add_column("counts")
    for name, counts in summary["layouts"].items():
        table.add_row(name, ", ".join(f"{k}={v}" for k, v in counts.items()))
    stdout.print(table)
