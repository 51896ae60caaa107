"""Zero-shot: prompt files override the defaults; pretrained beats random init."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from cmcgns_cli.data.prepared import open_prepared, write_prepared
from cmcgns_cli.downstream.zeroshot import (
    DEFAULT_PROMPTS,
    evaluate_zeroshot,
    load_prompts,
)
from tests.embed.shared import shared_world
from tests.standards import CHEXPERT_TASKS
from tests.train.worlds import FINDINGS

# the test world's findings -> CheXpert classes (Atelectasis and Edema never occur)
CLASS_OF = {0: "Pleural Effusion", 1: "Cardiomegaly", 2: "Consolidation"}
PROMPTS_TOML = """
["Pleural Effusion"]
positive = ["there is a left pleural effusion", "small left effusion is seen"]
negative = ["the lungs are clear"]

[Cardiomegaly]
positive = ["the heart is enlarged", "cardiomegaly is present"]
negative = ["the lungs are clear"]

[Consolidation]
positive = ["right upper lobe opacity is noted", "opacity in the right upper lung"]
negative = ["the lungs are clear"]
"""


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    data, run = shared_world(tmp_path_factory)
    p = open_prepared(data)
    labels = []
    for sents in p.manifest["sentences"]:
        y = np.zeros(len(CHEXPERT_TASKS), dtype=np.float32)
        for f, name in CLASS_OF.items():
            if any(str(s) in FINDINGS[f] for s in sents):
                y[CHEXPERT_TASKS.index(name)] = 1.0
        labels.append(y)
    manifest = p.manifest.copy()
    manifest["labels"] = labels
    out = tmp_path_factory.mktemp("zs") / "labelled"
    write_prepared(out, dataset="mimic", manifest=manifest, images=np.asarray(p.images),
                   extra_meta={"label_names": list(CHEXPERT_TASKS)})  # fmt: skip
    prompts = out.parent / "prompts.toml"
    prompts.write_text(PROMPTS_TOML)
    return out, run, prompts


def test_prompt_files_override_named_classes(tmp_path):
    j = tmp_path / "p.json"
    j.write_text(json.dumps({"Edema": {"positive": "edema", "negative": ["no edema"]}}))
    got = load_prompts(j)
    assert got["Edema"] == {"positive": ["edema"], "negative": ["no edema"]}
    assert got["Cardiomegaly"] == DEFAULT_PROMPTS["Cardiomegaly"]
    y = tmp_path / "p.yaml"
    y.write_text("Edema:\n  positive: [a b]\n  negative: [c d]\n")
    assert load_prompts(y)["Edema"]["negative"] == ["c d"]
    bad = tmp_path / "bad.toml"
    bad.write_text('[Edema]\npositive = ["x"]\n')
    from cmcgns_cli.errors import BadInputError

    with pytest.raises(BadInputError, match="negative"):
        load_prompts(bad)


def test_zeroshot_beats_random_init(labelled, cli):
    data, run, prompts = labelled
    res = cli("evaluate", "--task", "zeroshot-mimic", "--data", data, "--checkpoint", run,
              "--prompts", prompts, "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    got = json.loads(res.stdout)["mean"]
    init = evaluate_zeroshot("zeroshot-mimic", data, run, torch.device("cpu"),
                             prompts_file=prompts, random_init=True)["metrics"]  # fmt: skip
    print(
        "zero-shot AUROC pretrained vs random init: "
        + ", ".join(f"{c} {got[c]:.3f}/{init[c]:.3f}" for c in CLASS_OF.values())
        + f", macro {got['macro_auroc']:.3f}/{init['macro_auroc']:.3f}",
        file=sys.__stderr__,
    )
    # Atelectasis and Edema never occur in the test world: AUROC is undefined, JSON null
    assert got["Edema"] is None and got["Atelectasis"] is None
    assert all(got[c] is not None and got[c] > 0.5 for c in CLASS_OF.values())
    assert got["macro_auroc"] >= init["macro_auroc"] + 0.1
    assert got["macro_auroc"] >= 0.7
    res = cli("evaluate", "--task", "zeroshot-rsna", "--data", data, "--checkpoint", run)
    assert res.exit_code == 2 and "rsna" in res.stderr


def test_zeroshot_scores_a_named_split_such_as_5x200(labelled, cli, tmp_path):
    data, run, prompts = labelled
    p = open_prepared(data)
    manifest = p.manifest.copy()
    rows = np.flatnonzero(manifest["split"].to_numpy() == "test")[:6]
    manifest.loc[rows, "split"] = "5x200"
    out = write_prepared(
        tmp_path / "d",
        dataset="mimic",
        manifest=manifest,
        images=np.asarray(p.images),
        extra_meta={"label_names": list(CHEXPERT_TASKS)},
    )
    res = cli("evaluate", "--task", "zeroshot-mimic", "--data", out, "--checkpoint", run,
              "--prompts", prompts, "--split", "5x200", "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["mean"]["n"] == 6 and got["protocol"]["split"] == "5x200"
    res = cli("evaluate", "--task", "rsna-cls", "--data", out, "--checkpoint", run,
              "--split", "5x200")  # fmt: skip
    assert res.exit_code == 2 and "--split" in res.stderr
