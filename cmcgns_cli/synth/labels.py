"""CheXpert 14-label convention: 1.0 positive, 0.0 negative, -1.0 uncertain, None blank."""

from __future__ import annotations

# CheXpert's CSV order (train.csv / valid.csv).
CHEXPERT_LABELS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
# MIMIC-CXR-JPG's chexpert / negbio CSVs list them alphabetically.
MIMIC_LABELS = tuple(sorted(CHEXPERT_LABELS))

# Which labels a drawn finding makes true (foreign objects are not a CheXpert label).
FINDING_LABELS: dict[str, tuple[str, ...]] = {
    "cardiomegaly": ("Cardiomegaly",),
    "widened_mediastinum": ("Enlarged Cardiomediastinum",),
    "pleural_effusion": ("Pleural Effusion",),
    "pneumothorax": ("Pneumothorax",),
    "consolidation": ("Consolidation", "Lung Opacity"),
    "pneumonia": ("Pneumonia", "Lung Opacity"),
    "covid": ("Pneumonia", "Lung Opacity"),
    "edema": ("Edema",),
    "atelectasis": ("Atelectasis",),
    "nodule": ("Lung Lesion",),
    "mass": ("Lung Lesion",),
    "fracture": ("Fracture",),
    "pleural_thickening": ("Pleural Other",),
    "support_device": ("Support Devices",),
    "foreign_object": (),
}


def merge_mentions(mentions: list[dict[str, float]]) -> dict[str, float | None]:
    """Combine per-sentence mentions the way the CheXpert labeler does.

    Positive beats uncertain beats negative; an unmentioned label stays blank. No Finding is
    1 when no pathology (anything but Support Devices) is positive or uncertain.
    """
    out: dict[str, float | None] = dict.fromkeys(CHEXPERT_LABELS)
    rank = {1.0: 3, -1.0: 2, 0.0: 1}
    for m in mentions:
        for k, v in m.items():
            cur = out[k]
            if cur is None or rank[v] > rank[cur]:
                out[k] = v
    pathology = [k for k in CHEXPERT_LABELS if k not in ("No Finding", "Support Devices")]
    out["No Finding"] = None if any(out[k] in (1.0, -1.0) for k in pathology) else 1.0
    return out


def truth_labels(finding_names: list[str]) -> dict[str, float]:
    """Radiologist-style labels (valid.csv): 1 for what was drawn, 0 otherwise, no blanks."""
    out = dict.fromkeys(CHEXPERT_LABELS, 0.0)
    for name in finding_names:
        for k in FINDING_LABELS.get(name, ()):
            out[k] = 1.0
    pathology = [k for k in CHEXPERT_LABELS if k not in ("No Finding", "Support Devices")]
    out["No Finding"] = 0.0 if any(out[k] == 1.0 for k in pathology) else 1.0
    return out
