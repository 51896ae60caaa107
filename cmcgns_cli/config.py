"""Typed configuration: dataclasses, presets, config-file and command-line overrides.

Resolution order (later wins): preset -> config file (TOML or YAML) -> ``--set`` / CLI options.
The preset and loss-variant tables are data in :mod:`cmcgns_cli.config_presets`.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from cmcgns_cli import jsonio
from cmcgns_cli.config_presets import PRESET_OVERRIDES, PRESETS, VARIANTS
from cmcgns_cli.config_recipe import (
    RECIPE_VARIANTS,
    apply_recipe_variant,
    check_recipe_switches,
    old_recipe,
    qualified_keys,
)
from cmcgns_cli.config_values import (
    check_ranges,
    coerce,
    coerce_optional,
    load_config_file,
    parse_set,
)
from cmcgns_cli.errors import BadInputError

# the model-wiring switches by variant (part of RECIPE_VARIANTS, set with it)
MODEL_VARIANTS: dict[str, dict[str, Any]] = {v: t["model"] for v, t in RECIPE_VARIANTS.items()}


@dataclass
class DataConfig:
    """Prepared-data reading: image and crop sizes (px), report token and sentence limits,
    augmentation, DataLoader workers (``[data]`` in a config file)."""

    image_size: int = 256  # prepared images are resized to this before cropping
    crop_size: int = 224  # training crop fed to the image encoder
    max_length: int = 256  # report tokens
    max_sentences: int = 32  # sentences kept per report (the rest are dropped)
    # training augmentation: random_crop = a random crop_size crop of the image_size letterbox
    # and nothing else (authors); resized_crop = random resized crop + contrast/brightness
    # jitter (clean); none = the centre crop, as in validation
    augment: Literal["random_crop", "resized_crop", "none"] = "random_crop"
    workers: int = 4


@dataclass
class ModelConfig:
    """Encoders, embedding width and heads (``[model]``); presets fill these."""

    # resnet50 | vit_b16 | resnet18 | resnet_tiny (torchvision-keyed ResNet, BasicBlock [1,1,1,1])
    image_encoder: str = "resnet50"
    image_weights: str | None = None  # local state-dict file (e.g. ImageNet weights)
    # SHA-256 of image_weights, recorded when the run starts; None with random init
    image_weights_sha256: str | None = None
    # a local directory or hub id of a BERT model, or "scratch" to build one from the fields below
    text_encoder: str = "emilyalsentzer/Bio_ClinicalBERT"
    text_hidden: int = 768
    text_layers: int = 12
    text_heads: int = 12
    text_intermediate: int = 3072
    vocab_size: int = 30522  # for a scratch tokenizer trained on the corpus
    embed_dim: int = 768
    pool_heads: int = 8  # heads of the CLIP-style attention pooling (the global text vector)
    predictor_hidden: int | None = None  # SimSiam predictor hidden units; None = embed_dim // 2
    decoder_channels: int = 512  # CM-MIR decoder width: first conv stage (halved per stage)
    # ResNet local tokens: the authors' reshape of the (B, C, h, w) map without moving the
    # channel axis (channel_view) or one token per grid cell (spatial); see docs/fidelity.md
    local_tokens: Literal["channel_view", "spatial"] = "channel_view"
    # ResNet global image vector: CLIP-style attention pool (authors) or the average (mean)
    image_pool: Literal["attention", "mean"] = "attention"
    # projection weights ~ N(0, in_features^-1/2) (authors) or PyTorch's Linear default
    proj_init: Literal["authors", "default"] = "authors"
    decoder_align_corners: bool = True  # CM-MIR decoder's bilinear x2 (authors: True)
    # ViT CM-MIR as the authors run it (token dropout x2, one decoder layer applied six times,
    # ...) or this project's earlier form; see model/decoder.py
    vit_cmmir: Literal["authors", "clean"] = "authors"
    # centre and scale the global image and report vectors over the batch before their L2
    # norm (a BatchNorm without affine parameters; running statistics in evaluation): "none"
    # (authors; the paper presets) or "batchnorm" (tiny, small: from scratch their report
    # vectors start nearly identical and the run stays on the InfoNCE plateau; see
    # docs/fidelity.md)
    global_norm: Literal["none", "batchnorm"] = "none"


@dataclass
class LossConfig:
    """Loss weights and the form of each term (``[loss]``); ``variant`` picks the
    authors' forms or the clean ones."""

    w_global: float = 1.0
    w_local_image: float = 1.0
    w_local_text: float = 1.0
    w_recon: float = 1.0
    clustering: bool = True  # cross-modal k-means negatives; False = plain local InfoNCE
    temperature_init: float = 0.1  # global logit scale s starts at log(1/0.1)
    logit_scale_max: float = 0.0  # clamp exp(s) at this value (CLIP: 100); 0 = never (authors)
    local_text_tau: float = 1.0
    num_clusters: int = 128
    cluster_init_threshold: float = 0.4
    cluster_momentum: float = 0.001
    hard_negative_weight: float = 3.0
    bml_alpha: float = 0.2
    bml_beta: float = 0.5
    bml_weight: float = 1e-4
    mask_ratio: float = 0.5
    recon_scale: float = 10.0
    variant: Literal["authors", "clean", "custom"] = "authors"
    centroid_update: Literal["sum", "mean"] = "sum"
    hard_negative_mode: Literal["multiply", "additive_block", "additive_column"] = "multiply"
    false_negative_denominator: Literal["keep", "remove"] = "keep"
    bml_reduction: Literal["all_pairs", "masked_pairs"] = "all_pairs"
    mask_mode: Literal["channels", "patches"] = "channels"
    recon_region: Literal["all", "masked"] = "all"
    recon_final_relu: bool = True  # the authors' ReLU after the decoder's last conv
    # move a centroid that got no sentence for this many steps onto the farthest one; 0 = never
    idle_centroid_restart: int = 0
    # use the clusters only while the clustered features are spread (clean) or always (authors)
    cluster_gate: Literal["init", "spread"] = "init"
    # under several processes: local text negatives and k-means per rank, never synchronised
    # (rank, the authors' DDP behaviour) or over the global batch (global)
    local_text_scope: Literal["rank", "global"] = "rank"


@dataclass
class TrainConfig:
    """The two-stage schedule and run settings (``[train]``): epochs per stage, per-process
    batch size, optimizer, lr and weight decay, warm-up (epochs), clipping, the stage-2 start,
    accumulation, seed, device, logging and speed switches."""

    stage1_epochs: int = 10
    stage2_epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-5
    warmup_epochs: float = 1.0
    warmup_start_lr: float = 1e-7
    weight_decay: float = 1e-6
    # adam = torch.optim.Adam, weight decay added to the gradient (authors); adamw = decoupled
    optimizer: Literal["adam", "adamw"] = "adam"
    grad_clip: float = 0.0  # clip the global gradient norm at this value; 0 = never (authors)
    # stage 2 starts from the last stage-1 weights (authors) or the best (lowest val loss)
    stage2_init: Literal["last", "best"] = "last"
    accumulate: int = 1
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    seed: int = 42
    device: str = "auto"
    log_every: int = 10
    max_steps: int | None = None  # cap per stage, for smoke runs
    compile: bool = False  # torch.compile the encoders' blocks (nn.Module.compile, keys kept)
    compile_backend: str = "inductor"  # torch.compile backend ("eager" / "aot_eager" to debug)
    grad_checkpoint: bool = False  # recompute encoder activations in backward (less memory)
    channels_last: bool = True  # NHWC image encoder on CUDA (tensor-core friendly convs)
    sync_bn: bool = False  # SyncBatchNorm across ranks (CUDA DDP only); default per-rank BN
    tensorboard: str | None = None  # also log every record to TensorBoard in this directory


@dataclass
class Config:
    """A whole run configuration: ``data``, ``model``, ``loss``, ``train`` and the preset
    it started from; saved as the run's config.json."""

    preset: str = "paper-resnet50"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict of every field."""
        return asdict(self)

    def to_json(self) -> str:
        """:meth:`to_dict` as indented strict JSON."""
        return jsonio.dumps(self.to_dict(), indent=2)


def preset(name: str) -> Config:
    """The config of a named preset."""
    if name not in PRESET_OVERRIDES:
        raise BadInputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    cfg = Config(preset=name)
    apply_overrides(cfg, PRESET_OVERRIDES[name], source=f"preset {name}")
    return cfg


def apply_overrides(
    cfg: Config, overrides: dict[str, Any], source: str, set_before: frozenset[str] = frozenset()
) -> Config:
    """Apply a nested {section: {key: value}} mapping in place, checking names and types.

    ``set_before``: loss switches an earlier layer (config file, ``--set``) set explicitly; a
    ``loss.variant`` in this mapping leaves them, as it leaves the switches set beside it."""
    for section, values in overrides.items():
        if section == "preset":
            continue
        target = getattr(cfg, section, None)
        if target is None or not dataclasses.is_dataclass(target):
            raise BadInputError(f"{source}: unknown config section {section!r}")
        if not isinstance(values, dict):
            raise BadInputError(f"{source}: section {section!r} must be a table of keys")
        known = {f.name: f for f in fields(target)}
        for key, value in values.items():
            if key not in known:
                close = difflib.get_close_matches(key, list(known), n=1)
                hint = f"; did you mean {section}.{close[0]}?" if close else ""
                raise BadInputError(f"{source}: unknown key {section}.{key}{hint}")
            where = f"{source}: {section}.{key}"
            current = getattr(target, key)
            if value is None and any(f"{q}none{q}" in str(known[key].type) for q in "'\""):
                value = "none"  # a choice spelled like the null marker (data.augment=none)
            if current is None:  # an optional field: its declared type says how to read it
                setattr(target, key, coerce_optional(str(known[key].type), value, where))
            else:
                setattr(target, key, coerce(current, value, where))
        if section == "loss" and "variant" in values:
            _apply_variant(cfg.loss, explicit={*values, *set_before})
            apply_recipe_variant(cfg, explicit={*qualified_keys(overrides), *set_before})
        if section == "loss":
            _check_switches(cfg.loss, source)
    check_recipe_switches(cfg, source)
    return cfg


MAX_IDLE_RESTART = 10**9  # the idle counters are int64 buffers; far beyond any run's length

# what a run saved before a switch existed ran (its config.json lacks the key, and its
# variant's current value may differ)
_SWITCHES_ADDED_LATER: dict[str, Any] = {
    "cluster_gate": "init",
    "idle_centroid_restart": 0,
    "local_text_scope": "global",
}
# the same for the model wiring switches: earlier runs all ran today's clean wiring
_MODEL_SWITCHES_ADDED_LATER: dict[str, Any] = dict(MODEL_VARIANTS["clean"])

# allowed values of the string switches; the old one-column "+ w" form was called "additive"
_SWITCH_CHOICES: dict[str, tuple[str, ...]] = {
    "centroid_update": ("sum", "mean"),
    "hard_negative_mode": ("multiply", "additive_block", "additive_column"),
    "false_negative_denominator": ("keep", "remove"),
    "bml_reduction": ("all_pairs", "masked_pairs"),
    "mask_mode": ("channels", "patches"),
    "recon_region": ("all", "masked"),
    "cluster_gate": ("init", "spread"),
    "local_text_scope": ("rank", "global"),
}


def _check_switches(loss: LossConfig, source: str) -> None:
    if not 0 <= loss.idle_centroid_restart <= MAX_IDLE_RESTART:
        raise BadInputError(
            f"{source}: loss.idle_centroid_restart must be 0 (never) to {MAX_IDLE_RESTART} "
            f"k-means updates, not {loss.idle_centroid_restart}"
        )
    for key, choices in _SWITCH_CHOICES.items():
        value = getattr(loss, key)
        if value not in choices:
            hint = (
                " (the former `additive` is now `additive_block` (clean, ClusterNS) or "
                "`additive_column` (one extra column + w))"
                if key == "hard_negative_mode" and value == "additive"
                else ""
            )
            raise BadInputError(
                f"{source}: loss.{key} must be one of {', '.join(choices)}, not {value!r}{hint}"
            )


def _apply_variant(loss: LossConfig, explicit: set[str]) -> None:
    if loss.variant == "custom":
        return
    if loss.variant not in VARIANTS:
        raise BadInputError(f"loss.variant must be authors, clean or custom, not {loss.variant!r}")
    for key, value in VARIANTS[loss.variant].items():
        if key not in explicit:  # an explicit per-place switch beats the shorthand
            setattr(loss, key, value)


def resolve(
    preset_name: str,
    config_file: Path | None = None,
    sets: list[str] | None = None,
    cli: dict[str, dict[str, Any]] | None = None,
) -> Config:
    """Preset, then the config file, then ``--set`` items, then explicit CLI options.

    An option and a ``--set`` item that give one key two different values are refused
    (:func:`check_no_contradiction`, exit 2) rather than one silently winning."""
    cfg = preset(preset_name)
    switches: set[str] = set()  # loss switches set explicitly so far: a later variant keeps them
    layers = []
    if config_file is not None:
        layers.append((load_config_file(config_file), str(config_file)))
    set_layer = parse_set(sets) if sets else {}
    if sets:
        layers.append((set_layer, "--set"))
    if cli:
        pruned = {s: {k: v for k, v in kv.items() if v is not None} for s, kv in cli.items()}
        check_no_contradiction(set_layer, pruned)
        layers.append(({s: kv for s, kv in pruned.items() if kv}, "options"))
    for overrides, source in layers:
        apply_overrides(cfg, overrides, source=source, set_before=frozenset(switches))
        switches |= set(overrides.get("loss") or ()) & set(VARIANTS["authors"])
        switches |= qualified_keys(overrides)
    if cfg.data.crop_size > cfg.data.image_size:  # before any work: name where each came from
        came = "given" if "data.crop_size" in switches else f"the {preset_name} preset's"
        raise BadInputError(
            f"data.crop_size {cfg.data.crop_size} ({came}) is larger than data.image_size "
            f"{cfg.data.image_size}: set both, e.g. --set data.crop_size={cfg.data.image_size}"
        )
    check_ranges(cfg)
    return cfg


def _same_value(option: Any, text: Any) -> bool:
    """Whether an option's value and a ``--set`` value (text) say the same thing."""
    if text is None or option is None:
        return text is option
    if isinstance(option, int | float) and not isinstance(option, bool):
        try:
            return float(text) == float(option)
        except (TypeError, ValueError):
            return False
    return str(text).strip().lower() == str(option).strip().lower()


def check_no_contradiction(
    set_layer: dict[str, dict[str, Any]], options: dict[str, dict[str, Any]]
) -> None:
    """Refuse one key given two different values by a named option and by ``--set`` (e.g.
    ``--variant clean --set loss.variant=authors``): both are explicit, so neither silently
    wins. The same value twice is accepted.

    Raises:
        BadInputError: one line naming the option, the ``--set`` item and both values.
    """
    for section, values in options.items():
        for key, value in values.items():
            given = set_layer.get(section, {})
            if key in given and not _same_value(value, given[key]):
                shown = value.value if hasattr(value, "value") else value
                raise BadInputError(
                    f"--{key.replace('_', '-')} {shown} and --set {section}.{key}="
                    f"{given[key]} contradict each other; give one of them"
                )


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a Config saved with ``to_dict`` (checkpoints' config.json)."""
    cfg = Config(preset=data.get("preset", "custom"))
    sections = copy.deepcopy({k: v for k, v in data.items() if k != "preset"})
    loss = sections.get("loss")
    if isinstance(loss, dict):
        if loss.get("hard_negative_mode") == "additive":
            loss["hard_negative_mode"] = "additive_column"  # what runs saved before the rename ran
        for key, value in _SWITCHES_ADDED_LATER.items():
            loss.setdefault(key, value)
    old_recipe(sections)
    model = sections.get("model")
    if isinstance(model, dict):
        for key, value in _MODEL_SWITCHES_ADDED_LATER.items():
            model.setdefault(key, value)
    apply_overrides(cfg, sections, source="config.json")
    return cfg
