"""Run health: did a pretraining stage collapse? Judged from the gauges the step records hold.

Three signs, each over the train records of a stage's last epoch (metrics.jsonl):

- ``global_plateau``: the mean global InfoNCE loss is at or above log(global batch) less
  2 %, the loss of a model whose image and report vectors tell the pairs of a batch apart no
  better than chance (uniform logits over N candidates give cross-entropy log N; a loss
  above it, e.g. spread vectors at a high logit scale that still rank the pairs at random,
  is no better);
- ``report_vectors`` / ``image_vectors``: the mean of ``text_global_cos`` /
  ``image_global_cos`` (mean pairwise cosine of the batch's global vectors) is above 0.98,
  i.e. every report (image) maps to nearly the same direction;
- ``clusters``: the cross-modal k-means puts the batch's sentences in one cluster
  (``clusters_nonempty`` averages below 1.5 over the steps that used the clusters).

A stage with any sign is ``collapsed``; a stage whose last epoch has none of the gauges
(e.g. a global-only ablation has no clusters) is judged on those it has.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

PLATEAU_TOLERANCE = 0.02  # relative distance below log(global batch) that still counts
COS_LIMIT = 0.98  # mean pairwise cosine of the global vectors above which they collapsed
ONE_CLUSTER = 1.5  # mean clusters in use below which the k-means found one cluster

ADVICE = {
    "global_plateau": "more epochs or another --lr",
    "report_vectors": "a warm text encoder (--text-encoder DIR, e.g. from `cmcgns pretrain-text`)",
    "image_vectors": "warm image weights (--image-weights FILE or --init-from RUN)",
    "clusters": "--variant clean (its k-means waits until the features spread)",
}


# what to try for a collapsed encoder that already started warm: the warm start is not it
ALREADY_WARM = "more epochs, another --lr or a larger --batch-size"


def warm_starts(
    model: Any, init_parts: list[str] | tuple[str, ...] = (), variant: str | None = None
) -> dict[str, str]:
    """What a run already used of what the advice suggests: ``{"text": ..., "image": ...,
    "clusters": ...}`` naming the option (``--text-encoder NAME``, ``--image-weights FILE``,
    ``--init-from`` with its ``init_parts``, ``--variant clean``). ``model``: the run's
    ``ModelConfig`` (``text_encoder`` ``"scratch"`` and ``image_weights`` None mean random
    init); ``variant``: its ``loss.variant``."""
    used: dict[str, str] = {}
    if variant == "clean":
        used["clusters"] = "--variant clean"
    if str(getattr(model, "text_encoder", "scratch") or "scratch") != "scratch":
        used["text"] = f"--text-encoder {model.text_encoder}"
    if "text" in init_parts:
        used["text"] = "--init-from (its text encoder)"
    if getattr(model, "image_weights", None):
        used["image"] = f"--image-weights {model.image_weights}"
    if "image" in init_parts:
        used["image"] = "--init-from (its image encoder)"
    return used


def run_warm_starts(run: Path, model: Any = None, variant: str | None = None) -> dict[str, str]:
    """:func:`warm_starts` of the run directory ``run``: its ``ModelConfig`` ``model`` (default:
    the ``model`` section of its config.json), its ``loss.variant`` ``variant`` (default: its
    config.json's) and the parts ``--init-from`` filled, as its config.json records them (a
    resumed run's too). ``{}`` without a readable config.json and no ``model``."""
    try:
        saved = json.loads((Path(run) / "config.json").read_text(encoding="utf-8"))
        parts = list((saved.get("init_from") or {}).get("parts") or [])
        variant = variant or (saved.get("loss") or {}).get("variant")
        if model is None:
            model = SimpleNamespace(**dict(saved.get("model") or {}))
    except (OSError, ValueError, AttributeError, TypeError):
        parts = []
    return warm_starts(model, parts, variant) if model is not None else {}


def _mean(records: list[dict[str, Any]], key: str) -> float | None:
    vals = [float(r[key]) for r in records if isinstance(r.get(key), int | float)]
    vals = [v for v in vals if math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def judge_stage(records: list[dict[str, Any]], global_batch: int) -> dict[str, Any]:
    """Health of one stage from its last epoch's train records.

    Args:
        records: metrics.jsonl ``train`` records of ONE stage (dicts; gauges may be null);
            only those of the highest ``epoch`` are used.
        global_batch: pairs that compete in one global InfoNCE (per-process batch x
            processes); the plateau is log(global_batch) nats.

    Returns:
        ``{"status": "ok" | "collapsed" | "unknown", "collapsed": [signs], "epoch",
        "steps", "global_loss", "plateau", "image_global_cos", "text_global_cos",
        "clusters_nonempty"}``; "unknown" when there is no record. Gauge values are the
        last epoch's means (None when not recorded).
    """
    if not records:
        return {"status": "unknown", "collapsed": []}
    epoch = max(int(r.get("epoch", 0)) for r in records)
    last = [r for r in records if int(r.get("epoch", 0)) == epoch]
    plateau = math.log(global_batch) if global_batch > 1 else None
    glob = _mean(last, "global")
    img, txt = _mean(last, "image_global_cos"), _mean(last, "text_global_cos")
    clusters = _mean(last, "clusters_nonempty")
    signs = []
    # a global term switched off is recorded as 0: no plateau to judge then. One-sided: a
    # loss above log(batch) has learnt no more than one on it (a fresh tiny run that ended
    # at 3.72 > log 32 had a held-out top-1 at chance)
    if plateau and glob and glob >= (1 - PLATEAU_TOLERANCE) * plateau:
        signs.append("global_plateau")
    if txt is not None and txt > COS_LIMIT:
        signs.append("report_vectors")
    if img is not None and img > COS_LIMIT:
        signs.append("image_vectors")
    if clusters is not None and clusters < ONE_CLUSTER:
        signs.append("clusters")
    return {
        "status": "collapsed" if signs else "ok",
        "collapsed": signs,
        "epoch": epoch,
        "steps": len(last),
        "global_loss": glob,
        "plateau": plateau,
        "image_global_cos": img,
        "text_global_cos": txt,
        "clusters_nonempty": clusters,
    }


def read_train_records(metrics: Path) -> list[dict[str, Any]]:
    """The ``train`` records of a metrics.jsonl (a torn last line is skipped)."""
    out = []
    path = Path(metrics)
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("kind") == "train":
            out.append(rec)
    return out


def judge_run(
    records: list[dict[str, Any]], global_batch: int, used: dict[str, str] | None = None
) -> dict[str, Any]:
    """The run's health: each stage judged by :func:`judge_stage`; the run's ``status`` and
    ``collapsed`` are those of its last trained stage (the weights it ends with).
    ``used``: the run's warm starts (:func:`warm_starts`), so the advice never suggests one
    the run already had.

    Returns ``{"status", "collapsed", "stage", "advice", "stages": {"1": ..., "2": ...}}``
    (``advice`` is one sentence, empty when healthy)."""
    stages: dict[str, Any] = {}
    for st in sorted({int(r.get("stage", 1)) for r in records}):
        stages[str(st)] = judge_stage([r for r in records if r.get("stage") == st], global_batch)
    if not stages:
        return {"status": "unknown", "collapsed": [], "stage": None, "advice": "", "stages": {}}
    last = max(stages, key=int)
    verdict = stages[last]
    return {
        "status": verdict["status"],
        "collapsed": verdict["collapsed"],
        "stage": int(last),
        "advice": advice(verdict["collapsed"], used),
        "stages": stages,
    }


def advice(signs: list[str], used: dict[str, str] | None = None) -> str:
    """What to try for the collapse ``signs`` (one clause each, ``;``-joined, no repeats).

    ``used`` (:func:`warm_starts`): a sign whose cure the run already had (a warm encoder,
    ``--variant clean``) gets :data:`ALREADY_WARM` naming what it had, not that cure again."""
    used = used or {}
    clauses: list[str] = []
    had: list[str] = []  # what the run already used, for the signs it did not cure
    for sign in signs:
        side = {"report_vectors": "text", "image_vectors": "image"}.get(sign, sign)
        if side in used:
            had.append(
                f"the run already used {used[side]}"
                if side == "clusters"
                else f"the {side} encoder already started from {used[side]}"
            )
        elif ADVICE.get(sign) and ADVICE[sign] not in clauses:
            clauses.append(ADVICE[sign])
    if had:  # one clause for all of them; it covers the plateau's "more epochs or --lr"
        clauses = [c for c in clauses if c != ADVICE["global_plateau"]]
        clauses.insert(0, f"{ALREADY_WARM} ({'; '.join(had)})")
    return "; ".join(clauses)


def describe(verdict: dict[str, Any], stage: int, used: dict[str, str] | None = None) -> str:
    """One line for stderr: ``stage S health: ok`` or what collapsed, with the gauges, and
    what to try (:func:`advice` with the run's warm starts ``used``)."""
    if verdict["status"] != "collapsed":
        return f"stage {stage} health: {verdict['status']}"
    parts = []
    for sign in verdict["collapsed"]:
        if sign == "global_plateau":
            where = "is above" if verdict["global_loss"] > verdict["plateau"] else "sits on"
            parts.append(
                f"global loss {verdict['global_loss']:.3f} {where} the InfoNCE plateau "
                f"log(batch) = {verdict['plateau']:.3f}"
            )
        elif sign == "report_vectors":
            parts.append(f"report vectors' mean cosine {verdict['text_global_cos']:.4f}")
        elif sign == "image_vectors":
            parts.append(f"image vectors' mean cosine {verdict['image_global_cos']:.4f}")
        elif sign == "clusters":
            parts.append(f"{verdict['clusters_nonempty']:.1f} cluster in use")
    return (
        f"stage {stage} health: COLLAPSED ({'; '.join(parts)}) over its last epoch; "
        f"try {advice(verdict['collapsed'], used)}"
    )


def run_health(run: Path, batch_size: int) -> dict[str, Any]:
    """A run directory's health: the ``health`` of the last ``summary`` record of its
    metrics.jsonl (written when ``pretrain`` finishes), else judged now from its train records
    with ``batch_size`` pairs per step (one process); "unknown" without metrics.jsonl."""
    path = Path(run) / "metrics.jsonl"
    found = None
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("kind") == "summary" and rec.get("health"):
                found = rec["health"]
    if found is not None:
        return found
    return judge_run(read_train_records(path), batch_size, run_warm_starts(run))


def card_line(verdict: dict[str, Any]) -> str:
    """The model card's health line: the status, what collapsed and the last epoch's gauges."""
    status = verdict.get("status", "unknown")
    stage = (verdict.get("stages") or {}).get(str(verdict.get("stage")), {})
    gauges = [
        f"{name} {stage[key]:.3f}"
        for key, name in (
            ("global_loss", "global loss"),
            ("plateau", "plateau log(batch)"),
            ("text_global_cos", "report vectors' mean cosine"),
            ("image_global_cos", "image vectors' mean cosine"),
            ("clusters_nonempty", "clusters in use"),
        )
        if isinstance(stage.get(key), int | float)
    ]
    what = f" ({', '.join(verdict['collapsed'])})" if verdict.get("collapsed") else ""
    shown = f"; last epoch of stage {verdict.get('stage')}: {', '.join(gauges)}" if gauges else ""
    return f"{status}{what}{shown}"
