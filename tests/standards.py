"""Expected values written down from the standards, independently of the package's constants.

The tests compare the package against these literals, so a wrong constant in the package
(a dropped column, a swapped uncertain-label policy) fails instead of being copied into the
expectation.
"""

# The 14 CheXpert observations in the column order of CheXpert's train.csv / valid.csv
# (Irvin et al., AAAI 2019, CheXpert-v1.0-small).
CHEXPERT_CSV_LABELS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices",
)  # fmt: skip

# MIMIC-CXR-JPG 2.0.0 mimic-cxr-2.0.0-chexpert.csv / -negbio.csv: the same 14 labels,
# alphabetical, after subject_id and study_id.
MIMIC_CSV_LABELS = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum",
    "Fracture", "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion",
    "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices",
)  # fmt: skip

# The five CheXpert competition tasks, in the order the paper's protocol (MGCA) reports them.
CHEXPERT_TASKS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")

# MGCA's uncertain-label (-1) policy for those tasks: U-Ones for Atelectasis, Edema and
# Pleural Effusion, U-Zeros for Cardiomegaly and Consolidation; blank (unmentioned) -> 0.
UNCERTAIN_TO = {
    "Atelectasis": 1.0,
    "Cardiomegaly": 0.0,
    "Consolidation": 0.0,
    "Edema": 1.0,
    "Pleural Effusion": 1.0,
}
