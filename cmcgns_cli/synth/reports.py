"""MIMIC-CXR-style free-text reports whose words depend on what was drawn.

Each sentence carries the CheXpert mentions it makes, so the labels are derived from the
report text that was actually written (a report with only IMPRESSION loses its negations).
"""

from __future__ import annotations

import textwrap

import numpy as np

from cmcgns_cli.synth.findings import Finding
from cmcgns_cli.synth.labels import FINDING_LABELS, merge_mentions

LOBES = {
    ("right", "upper"): "right upper lobe",
    ("right", "middle"): "right middle lobe",
    ("right", "lower"): "right lower lobe",
    ("left", "upper"): "left upper lobe",
    ("left", "middle"): "lingula",
    ("left", "lower"): "left lower lobe",
}
DEVICE_WORDS = {
    "et_tube": (
        "Endotracheal tube terminates approximately 4 cm above the carina.",
        "ET tube is in standard position.",
    ),
    "ng_tube": (
        "Enteric tube courses below the diaphragm with tip in the stomach.",
        "Nasogastric tube tip is in the stomach.",
    ),
    "central_line": (
        "Central venous catheter tip terminates in the low SVC.",
        "Right-sided central line ends in the superior vena cava.",
    ),
    "pacemaker": (
        "Left chest wall pacemaker with leads in the right atrium and ventricle.",
        "Dual-lead pacing device is unchanged in position.",
    ),
    "ecg_leads": ("EKG leads overlie the chest.", "Monitoring leads project over the thorax."),
}
NEGATIONS = (
    (
        ("Pleural Effusion", "Pneumothorax"),
        (
            "No pleural effusion or pneumothorax.",
            "There is no pleural effusion or pneumothorax.",
            "No effusion or pneumothorax is seen.",
        ),
    ),
    (
        ("Consolidation",),
        (
            "No focal consolidation.",
            "There is no focal consolidation.",
            "Lungs are clear without focal consolidation.",
        ),
    ),
    (("Edema",), ("No pulmonary edema.", "There is no pulmonary vascular congestion or edema.")),
    (("Cardiomegaly",), ("Heart size is normal.", "The cardiac silhouette is not enlarged.")),
    (
        ("Enlarged Cardiomediastinum",),
        ("Mediastinal contours are normal.", "The mediastinal silhouette is not widened."),
    ),
    (("Pneumonia",), ("No evidence of pneumonia.",)),
    (("Fracture",), ("No displaced rib fracture.",)),
    (("Lung Lesion",), ("No suspicious pulmonary nodule.",)),
)


def _pick(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(0, len(options)))]


def _phrases(f: Finding, rng: np.random.Generator) -> tuple[str, str]:
    """(findings sentence, short impression phrase) for one finding."""
    side, sev = f.side, f.severity
    if f.name == "cardiomegaly":
        return _pick(
            rng,
            (
                f"The heart is {sev}ly enlarged.",
                f"There is {sev} cardiomegaly.",
                f"{sev.capitalize()} enlargement of the cardiac silhouette.",
            ),
        ), f"{sev.capitalize()} cardiomegaly"
    if f.name == "widened_mediastinum":
        return f"The mediastinum is {sev}ly widened.", "Widened mediastinum"
    if f.name == "pleural_effusion":
        where = "bilateral pleural effusions" if side == "bilateral" else f"{side} pleural effusion"
        s = _pick(
            rng,
            (
                f"There is a {sev} {where} with blunting of the costophrenic angle.",
                f"{sev.capitalize()} {where} layering at the base.",
                f"A {sev} {where} is present.",
            ),
        )
        return s, f"{sev.capitalize()} {where}"
    if f.name == "pneumothorax":
        s = _pick(
            rng,
            (
                f"There is a {sev} {side} {f.zone} pneumothorax with a visible pleural line.",
                f"{sev.capitalize()} {side} {f.zone} pneumothorax is seen.",
                f"A {side} pneumothorax, {sev} in size, is noted {f.zone}ly.",
            ),
        )
        return s, f"{sev.capitalize()} {side} pneumothorax"
    if f.name in ("consolidation", "pneumonia"):
        lobe = LOBES[(side, f.zone)]
        if f.name == "consolidation":
            s = _pick(
                rng,
                (
                    f"{sev.capitalize()} consolidation in the {lobe}.",
                    f"There is {sev} patchy consolidation of the {lobe}.",
                    f"Airspace consolidation is seen in the {lobe}.",
                ),
            )
            return s, f"{lobe.capitalize()} consolidation"
        s = _pick(
            rng,
            (
                f"Patchy opacity in the {lobe} concerning for pneumonia.",
                f"{sev.capitalize()} {lobe} opacity compatible with pneumonia.",
            ),
        )
        return s, f"{lobe.capitalize()} pneumonia"
    if f.name == "covid":
        return _pick(
            rng,
            (
                "Bilateral peripheral ground-glass opacities in the mid and lower zones, "
                "compatible with multifocal pneumonia such as COVID-19.",
                "Multifocal peripheral opacities bilaterally, concerning for atypical pneumonia.",
            ),
        ), "Bilateral peripheral opacities, likely viral pneumonia"
    if f.name == "edema":
        return _pick(
            rng,
            (
                f"{sev.capitalize()} pulmonary edema with perihilar haziness.",
                f"There is {sev} interstitial pulmonary edema.",
                f"Perihilar haze consistent with {sev} edema.",
            ),
        ), f"{sev.capitalize()} pulmonary edema"
    if f.name == "atelectasis":
        where = "bibasilar" if side == "bilateral" else f"{side} basilar"
        return _pick(
            rng,
            (
                f"{where.capitalize()} atelectasis.",
                f"Linear {where} atelectasis.",
                f"Plate-like atelectasis at the {where.replace('ilar', 'e')}.",
            ),
        ), f"{where.capitalize()} atelectasis"
    if f.name in ("nodule", "mass"):
        lobe = LOBES[(side, f.zone)]
        size = {"nodule": ("8 mm", "12 mm", "18 mm"), "mass": ("3 cm", "4 cm", "5 cm")}[f.name]
        mm = size[("mild", "moderate", "severe").index(sev)]
        return f"A {mm} {f.name} is seen in the {lobe}.", f"{lobe.capitalize()} {f.name}"
    if f.name == "fracture":
        return f"Acute fracture of a {side} lateral rib.", f"{side.capitalize()} rib fracture"
    if f.name == "pleural_thickening":
        return (
            f"{side.capitalize()} apical pleural thickening.",
            f"{side.capitalize()} pleural thickening",
        )
    if f.name == "support_device":
        s = _pick(rng, DEVICE_WORDS[f.kind])
        return s, ""
    if f.name == "foreign_object":
        return f"A {f.kind.replace('_', ' ')} projects over the chest, likely external.", ""
    raise ValueError(f.name)


def _uncertain(s: str, rng: np.random.Generator) -> str:
    body = s[0].lower() + s[1:].rstrip(".")
    return _pick(
        rng, (f"Possible {body}.", f"{s.rstrip('.')} cannot be excluded.", f"Questionable {body}.")
    )


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=76, initial_indent=" ", subsequent_indent=" ")


NORMAL = "normal"  # the finding of a sentence that describes no abnormality (negations, normal)


def make_report(
    findings: list[Finding], rng: np.random.Generator, view: str, defect: str = ""
) -> tuple[bytes, dict[str, float | None], list[str], list[str]]:
    """Write one report. Returns (raw bytes, CheXpert labels, the sentences used, the finding
    each of those sentences describes: a finding name, or ``"normal"``).

    `defect`: "" | "impression_only" | "empty_findings" | "non_utf8" | "no_headers".
    """
    find_s: list[tuple[str, dict]] = []
    imp_s: list[tuple[str, dict]] = []
    find_f: list[str] = []  # the finding of each sentence, beside find_s / imp_s
    imp_f: list[str] = []
    present = set()
    for f in findings:
        s, short = _phrases(f, rng)
        labels = FINDING_LABELS[f.name]
        present.update(labels)
        val = 1.0
        mild = f.severity in ("mild", "small")
        if mild and labels and f.name != "support_device" and rng.random() < 0.25:
            s, short, val = _uncertain(s, rng), _uncertain(short + ".", rng).rstrip("."), -1.0
        m = dict.fromkeys(labels, val)
        find_s.append((s, m))
        find_f.append(f.name)
        if short:
            imp_s.append((short + ".", m))
            imp_f.append(f.name)
    for keys, options in NEGATIONS:
        if not present.intersection(keys) and rng.random() < 0.6:
            find_s.append((_pick(rng, options), dict.fromkeys(keys, 0.0)))
            find_f.append(NORMAL)
    if not imp_s:
        imp_f.append(NORMAL)
        imp_s.append(
            (
                _pick(
                    rng,
                    ("No acute cardiopulmonary process.", "No acute intrathoracic abnormality."),
                ),
                {},
            )
        )
    numbered = len(imp_s) >= 2 and rng.random() < 0.5

    exam = "CHEST (PA AND LAT)" if view == "PA" else "CHEST (PORTABLE AP)"
    indication = _pick(
        rng,
        (
            "___ year old man with shortness of breath.",
            "___F with cough and fever  // ? pneumonia",
            "History: ___M with chest pain",
            "___-year-old woman with hypoxia.",
        ),
    )
    if defect == "non_utf8":
        indication = indication.rstrip(".") + ", temp 101.2\x00F."
    lines = [" " * 33 + "FINAL REPORT"]
    if rng.random() < 0.2:
        lines.insert(0, " WET READ: ___ ___ ___ 10:21 AM")
    if defect != "impression_only":
        head = "EXAMINATION:" if rng.random() < 0.8 else "EXAM:"
        lines += [f" {head}  {exam}", " ", f" INDICATION:  {indication}", " "]
        lines += [
            " TECHNIQUE:  "
            + (
                "PA and lateral views of the chest."
                if view == "PA"
                else "Portable AP view of the chest."
            ),
            " ",
        ]
        lines += [
            " COMPARISON:  " + _pick(rng, ("___", "None.", "Chest radiograph from ___.")),
            " ",
        ]
        lines += [" FINDINGS:", " "]
        if defect != "empty_findings":
            lines += [_wrap(" ".join(s for s, _ in find_s)), " "]
    lines += [" IMPRESSION:", " "]
    if numbered:
        lines += [_wrap(f"{i}. {s}") for i, (s, _) in enumerate(imp_s, 1)]
    else:
        lines += [_wrap(" ".join(s for s, _ in imp_s))]
    if rng.random() < 0.1:
        lines += [
            " ",
            " NOTIFICATION:  The findings were discussed with Dr. ___ by Dr. ___ on the "
            "telephone on ___ at 2:15 PM.",
        ]
    text = "\n".join(lines) + "\n"
    used, used_f = list(imp_s), list(imp_f)
    if defect not in ("impression_only", "empty_findings"):
        used += find_s
        used_f += find_f
    labels = merge_mentions([m for _, m in used])
    sentences = [s for s, _ in used]
    data = text.encode("utf-8")
    if defect == "non_utf8":  # a Latin-1 degree sign, as in some real reports
        data = data.replace(b"\x00", b"\xb0")
    return data, labels, sentences, used_f
