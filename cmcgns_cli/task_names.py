"""The downstream task names, in the order ``--help`` lists them (no imports: the CLI reads
them at start-up). ``downstream/tasks.py`` defines what each finetune task is."""

from __future__ import annotations

# a head is finetuned (finetune) and then scored (evaluate)
FINETUNE_TASKS = (
    "chexpert-cls",
    "rsna-cls",
    "covidx-cls",
    "folder-cls",
    "rsna-det",
    "object-cxr-det",
    "siim-seg",
    "rsna-seg",
)
# evaluate-only: they score a pretrain run directly, with no finetuning
EVAL_ONLY_TASKS = (
    "retrieval",
    "zeroshot-chexpert",
    "zeroshot-mimic",
    "zeroshot-rsna",
    "zeroshot-covidx",
    "grounding-rsna",
    "grounding-siim",
    "grounding-mscxr",
)
