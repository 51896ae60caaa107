"""The model card (README.md) of an exported bundle: YAML front matter, then the facts.

The front matter follows the Hugging Face model-card metadata (``license``, ``tags``,
``datasets``, ``metrics``, ``model-index``); the body states the preset, the objective
variant, every switch that differs from the preset, the prepared data's meta.json, the
training manifest's sha256 and the downstream results found beside the run.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml

from cmcgns_cli import jsonio
from cmcgns_cli.config import Config, resolve
from cmcgns_cli.train.health import card_line

TAGS = ["cmcgns", "cm-cgns", "chest-x-ray", "radiology-reports", "vision-language", "medical"]


def shareable(obj: Any) -> Any:
    """A copy of ``obj`` (dicts, lists, strings) in which every absolute local path becomes
    its last component (``/home/me/data/mimic`` -> ``mimic``): a card or bundle is meant to
    be shared, and a path on the author's machine says nothing to its reader and may say
    too much about the author (user names, mount points)."""
    if isinstance(obj, dict):
        return {k: shareable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [shareable(v) for v in obj]
    if isinstance(obj, str) and len(obj) > 1 and obj.startswith(("/", "~")) and "\n" not in obj:
        return Path(obj).name or obj
    return obj


def is_synthetic(meta: dict[str, Any]) -> bool:
    """Whether the prepared data (its meta.json) was drawn by ``cmcgns synth``."""
    return bool(meta.get("synthetic"))


def non_default_switches(cfg: Config) -> dict[str, dict[str, Any]]:
    """``{"section.key": {"value": v, "preset": p}}`` for every setting that differs from the
    preset the run names (with the run's objective variant applied), excluding run-local
    settings (device, workers, logging)."""
    try:
        base = resolve(cfg.preset, cli={"loss": {"variant": cfg.loss.variant}})
    except Exception:  # noqa: BLE001 - an unknown preset: every setting is a switch
        base = Config()
    skip = {"train.device", "data.workers", "train.log_every"}
    out: dict[str, dict[str, Any]] = {}
    for section in ("data", "model", "loss", "train"):
        mine, theirs = getattr(cfg, section), getattr(base, section)
        for f in dataclasses.fields(mine):
            key = f"{section}.{f.name}"
            a, b = getattr(mine, f.name), getattr(theirs, f.name)
            if a != b and key not in skip:
                out[key] = {"value": a, "preset": b}
    return out


def _image_init(cfg: Config, config: dict[str, Any] | None = None) -> str:
    """Where the image encoder started: another run's or bundle's weights (``--init-from``
    with its image part, as config.json's ``init_from`` records it), the weights file and its
    SHA-256, or random init."""
    init = (config or {}).get("init_from") or {}
    if "image" in (init.get("parts") or []):
        return f"its image part of `--init-from {Path(str(init.get('path'))).name}` (below)"
    if not cfg.model.image_weights:
        return "random (no image weights)"
    digest = cfg.model.image_weights_sha256 or "not recorded"
    return f"`{Path(cfg.model.image_weights).name}` (sha256 `{digest}`)"


def _selection_lines(config: dict[str, Any]) -> list[str]:
    """The card's line on the splits that selected the weights (config.json ->
    ``dataset.selection_splits``); none for runs that do not record them."""
    dataset = config.get("dataset") or {}
    splits = dataset.get("selection_splits")
    if (config.get("bundle") or {}).get("weights") == "last":
        return ["- checkpoint: the run's last weights (not chosen by validation)"]
    if not splits:
        return []
    line = (
        f"- checkpoint selected on: the {' + '.join(splits)} split"
        f"{'s' if len(splits) > 1 else ''} of `{dataset.get('name') or 'the training data'}` "
        "(pretraining validation)"
    )
    if [s for s in splits if s != "validate"]:
        line += (
            f"; scores on {' or '.join(s for s in splits if s != 'validate')} of this dataset "
            "are not held out (`cmcgns evaluate` warns)"
        )
    return [line]


def _same_run(checkpoint: str | None, run: Path) -> bool:
    if not checkpoint or checkpoint == "none":
        return False
    try:
        return Path(checkpoint).resolve() == run.resolve()
    except OSError:
        return False


def find_results(run: Path) -> list[dict[str, Any]]:
    """``metrics.json`` files of evaluations of this run: in the run directory, below it, or
    in a sibling directory, whose recorded encoder checkpoint is this run."""
    run = Path(run)
    candidates = [
        run / "metrics.json",
        *run.glob("*/metrics.json"),
        *run.parent.glob("*/metrics.json"),
    ]
    seen, out = set(), []
    for path in candidates:
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        try:
            res = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        proto = res.get("protocol") or {}
        enc = (proto.get("encoder") or {}).get("checkpoint")
        inside = run.resolve() in path.resolve().parents
        if not (_same_run(enc, run) or (inside and enc is None)):
            continue
        metrics = res.get("mean") if isinstance(res.get("mean"), dict) else res.get("metrics")
        if not isinstance(metrics, dict):
            continue
        metric = res.get("metric")
        value = metrics.get(metric) if metric in metrics else res.get("value")
        out.append(
            {
                "file": path.name,
                "task": res.get("task"),
                "metric": metric,
                "value": value,  # the mean over seeds (a file of one seed: its value)
                "sd": (res.get("std") or {}).get(metric),
                "n_seeds": int(res.get("n_seeds") or len(res.get("runs") or [1])),
                "metrics": metrics,
                "fraction": proto.get("fraction"),
                "full": proto.get("full"),
                "metric_rules": res.get("metric_rules") or {},
            }
        )
    return out


def _rule_lines(results: list[dict[str, Any]]) -> list[str]:
    """How each rule-bearing key was computed (detection and segmentation name theirs), with
    the images it scored where the result counts them (``<key>_images_scored``)."""
    lines: list[str] = []
    for r in results:
        for key, rule in (r.get("metric_rules") or {}).items():
            n = r["metrics"].get(f"{key}_images_scored")
            count = f" ({n} test images scored)" if n is not None else ""
            lines.append(f"- {r['task']} `{key}`{count}: {rule}")
    return ["", "How each value was computed:", "", *lines] if lines else []


def _quote(result: dict[str, Any]) -> str:
    """``0.5840 ± 0.0310 (n = 3)``: the mean over seeds, its sample sd and the number of
    seeds (one seed: ``0.6230 (n = 1)``, no spread to quote)."""
    value, sd, n = result.get("value"), result.get("sd"), result.get("n_seeds") or 1
    if not isinstance(value, int | float):
        return "n/a"
    spread = f" ± {sd:.4f}" if isinstance(sd, int | float) and n > 1 else ""
    return f"{value:.4f}{spread} (n = {n})"


def _task_type(task: str) -> str:
    """The Hugging Face task type of a downstream task name."""
    for suffix, kind in (("-cls", "image-classification"), ("-det", "object-detection"),
                         ("-seg", "image-segmentation")):  # fmt: skip
        if task.endswith(suffix):
            return kind
    return "zero-shot-image-classification" if task.startswith("zeroshot") else "feature-extraction"


def _front_matter(
    cfg: Config, pairs: dict[str, Any], results: list[dict[str, Any]], license_id: str
) -> dict[str, Any]:
    dataset = str(pairs["meta"].get("dataset", "unknown"))
    synthetic = is_synthetic(pairs["meta"])
    meta: dict[str, Any] = {
        "license": license_id,
        "library_name": "cmcgns",
        "pipeline_tag": "feature-extraction",
        "tags": [*TAGS, cfg.model.image_encoder, f"preset-{cfg.preset}"]
        + (["synthetic-data"] if synthetic else []),
        # a synthetic world in a public dataset's layout is not that dataset
        "datasets": [f"synthetic-{dataset}" if synthetic else dataset],
        "metrics": sorted({str(r["metric"]) for r in results if r.get("metric")}),
    }
    if results:
        meta["model-index"] = [
            {
                "name": f"cmcgns-{cfg.preset}-{cfg.model.image_encoder}",
                "results": [
                    {
                        "task": {"type": _task_type(str(r["task"])), "name": str(r["task"])},
                        "dataset": {"type": str(r["task"]), "name": str(r["task"])},
                        "metrics": [
                            {"type": str(k), "value": float(v), "name": str(k)}
                            for k, v in r["metrics"].items()
                            if isinstance(v, int | float)
                        ],
                    }
                    for r in results
                ],
            }
        ]
    return meta


def model_card(
    cfg: Config,
    config: dict[str, Any],
    pairs: dict[str, Any],
    results: list[dict[str, Any]],
    license_id: str,
) -> str:
    """The README.md text of a bundle (YAML front matter between ``---`` lines, then
    Markdown)."""
    front = yaml.safe_dump(_front_matter(cfg, pairs, results, license_id), sort_keys=False)
    switches = non_default_switches(cfg)
    bundle = config["bundle"]
    lines = [
        "---",
        front.rstrip(),
        "---",
        "",
        f"# CM-CGNS {cfg.model.image_encoder} ({cfg.preset})",
        "",
        "Image and report encoders pretrained with CM-CGNS (cross-modal clustering-guided",
        "negative sampling and cross-modal masked image reconstruction; Lan, Li, Xia et al.,",
        "arXiv 2506.11674).",
        "",
        *(
            [
                "**Trained on synthetic data**: a world of drawn phantoms and generated reports "
                "(`cmcgns synth`) in the layout of the public dataset named below; not real "
                "chest X-rays. Its results say that the pipeline works, not how well the model "
                "reads real images.",
                "",
            ]
            if is_synthetic(pairs["meta"])
            else []
        ),
        "```python",
        "import cmcgns_cli as cm",
        'model = cm.load("THIS_FOLDER")',
        'img = model.encode_images(["a.dcm"]); txt = model.encode_reports(["No acute process."])',
        "```",
        "",
        "## Training",
        "",
        f"- preset: `{cfg.preset}`",
        f"- objective variant: `{cfg.loss.variant}`",
        f"- image encoder: `{cfg.model.image_encoder}`; text encoder: "
        f"`{cfg.model.text_encoder}`; embedding dimension {cfg.model.embed_dim}",
        f"- weights: the run's `{bundle['weights']}` weights",
        f"- image encoder init: {_image_init(cfg, config)}",
        *(
            [
                f"- started from: `{Path(str(config['init_from'].get('path'))).name}` "
                f"({', '.join(config['init_from'].get('parts') or [])}; weights sha256 "
                f"`{config['init_from'].get('sha256')}`)"
            ]
            if config.get("init_from")
            else []
        ),
        f"- training pairs: {bundle['train_pairs']} (ids in `train_ids.txt`)",
        f"- training manifest sha256: `{bundle['manifest_sha256']}`",
        *_selection_lines(config),
        f"- health: {card_line(bundle.get('health') or {})}",
        "",
        "### Non-default switches",
        "",
    ]
    if switches:
        lines += [
            f"- `{k}` = `{v['value']}` (preset: `{v['preset']}`)" for k, v in switches.items()
        ]
    else:
        lines.append("- none: the preset as published")
    lines += ["", "### Prepared data (meta.json)", "", "```json"]
    meta_text = jsonio.dumps(shareable(pairs["meta"]), indent=2, default=str)
    lines += [meta_text, "```", "", "## Results", ""]
    if results:
        lines += [
            "| task | fraction | linear/full | metric | mean ± sd (n seeds) |",
            "|---|---|---|---|---|",
        ]
        for r in results:
            mode = "full" if r.get("full") else "linear"
            lines.append(
                f"| {r['task']} | {r.get('fraction')} | {mode} | {r['metric']} | {_quote(r)} |"
            )
        lines += _rule_lines(results)
    else:
        lines.append("No `metrics.json` was found beside the run at export time.")
    lines += [
        "",
        "## Files",
        "",
        "- `model.safetensors`: the whole model (`cmcgns embed --checkpoint THIS_FOLDER`)",
        "- `image_encoder.safetensors`: the image encoder with stock "
        + ("torchvision" if cfg.model.image_encoder.startswith("resnet") else "timm")
        + " keys (`load_state_dict`)",
        "- `text_encoder/`, `tokenizer/`: Hugging Face `AutoModel` / `AutoTokenizer` folders",
        "- `SHA256SUMS`: checksums of every file (`sha256sum -c SHA256SUMS`)",
        "",
    ]
    return "\n".join(lines)
