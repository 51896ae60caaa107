"""The Python API: a trained CM-CGNS model as an object, beside the command line.

```python
import cmcgns_cli as cm
model = cm.load("runs/r50", device="cpu")       # a run directory, an exported bundle, a hub id
img = model.encode_images(["a.dcm", "b.jpg", array_uint8_hw])   # (N, D) float32, L2-normalised
txt = model.encode_reports(["No acute process.", report_text])  # (N, D) float32
sim = model.similarity(img, txt)                                # (N_img, N_txt) cosine
att = model.attention(image, report)            # per sentence: (h, w) attention + sentences
```

``cmcgns embed`` is a thin layer over :meth:`Model.image_rows` / :meth:`Model.report_rows`, so
the API and the command line share one preprocessing: images are decoded and letterboxed as
``prepare`` does (DICOM VOI LUT / windowing, MONOCHROME1 inverted, longer side to the prepared
size, zero padding) and go through the run's eval transform (resize, centre crop, [-1, 1]);
reports are split into cleaned FINDINGS / IMPRESSION sentences as ``prepare`` does and tokenised
in the training layout. Errors are :class:`~cmcgns_cli.errors.BadInputError` (bad input) with the
one-line messages the CLI prints.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmcgns_cli.embedding.encode import image_embeddings, text_embeddings, to_device
from cmcgns_cli.embedding.inputs import ImagePrep, TextPrep, prepared_size, text_sentences
from cmcgns_cli.embedding.runs import LoadedRun, open_run
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.input_folder import RUN_OR_BUNDLE, input_folder

ImageInput = str | Path | np.ndarray


@dataclass
class Attention:
    """Sentence-to-patch attention of one image-report pair (the model's sigmoid
    cross-attention of each sentence over the image patches, arXiv 2506.11674 Sec. 3.2).

    ``maps``: float32 (S, h, w), one map per sentence over the patch grid, values in [0, 1];
    ``sentences``: the S sentences (cleaned, as ``prepare`` keeps them);
    ``image``: float32 (crop, crop) model-input image in [-1, 1], the frame the maps cover.
    """

    maps: np.ndarray
    sentences: list[str]
    image: np.ndarray

    def __len__(self) -> int:
        return len(self.sentences)

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        return iter(zip(self.sentences, self.maps, strict=True))


class Model:
    """A loaded CM-CGNS model (eval mode) with the preprocessing of ``embed``.

    Build it with :func:`load`. Attributes: ``path`` (the run or bundle), ``cfg`` (its
    :class:`~cmcgns_cli.config.Config`), ``device``, ``embed_dim`` (D), ``prepared_size``
    (letterbox size in px), ``weights`` (best | last | bundle), ``model`` (the torch module),
    ``tokenizer``.
    """

    def __init__(self, run: LoadedRun, prep_size: int) -> None:
        self.run = run
        self.path: Path = run.path
        self.cfg = run.cfg
        self.device: torch.device = run.device
        self.model: torch.nn.Module = run.model
        self.tokenizer = run.tok
        self.weights: str = run.weights
        self.prepared_size = int(prep_size)
        self.embed_dim = int(run.cfg.model.embed_dim)
        self._image_prep = ImagePrep(run.cfg, self.prepared_size)
        self._text_prep = TextPrep(run.cfg, run.tok)

    def __repr__(self) -> str:
        return (
            f"Model({str(self.path)!r}, image_encoder={self.cfg.model.image_encoder!r}, "
            f"embed_dim={self.embed_dim}, weights={self.weights!r}, device={str(self.device)!r})"
        )

    # -- preprocessing -------------------------------------------------------------------
    def image_tensor(self, image: ImageInput) -> torch.Tensor:
        """One image -> float32 (1, crop, crop) model input in [-1, 1].

        ``image``: a path (JPEG, PNG, TIFF, BMP or DICOM) or a uint8 array (H, W) grayscale
        at any resolution (letterboxed like a decoded file). Raises ``BadInputError`` naming
        the file and the problem.
        """
        if isinstance(image, np.ndarray):
            return self._image_prep.tensor(self._letterbox_array(image))
        tensor, reason = self._image_prep.load(str(image))
        if tensor is None:
            raise BadInputError(f"{image}: {reason}")
        return tensor

    def _letterbox_array(self, arr: np.ndarray) -> np.ndarray:
        from cmcgns_cli.data.imageio import letterbox, letterbox_transform

        if arr.dtype != np.uint8 or arr.ndim != 2 or min(arr.shape) < 1:
            raise BadInputError(
                f"image array of dtype {arr.dtype} and shape {tuple(arr.shape)}: expected a "
                "uint8 (H, W) grayscale array"
            )
        tf = letterbox_transform(arr.shape[0], arr.shape[1], self.prepared_size)
        return letterbox(np.ascontiguousarray(arr), tf, self.prepared_size)

    def _image_or_reason(self, image: ImageInput) -> tuple[torch.Tensor | None, str | None]:
        if isinstance(image, np.ndarray):
            try:
                return self.image_tensor(image), None
            except BadInputError as exc:
                return None, str(exc)
        return self._image_prep.load(str(image))

    # -- rows (the layer ``cmcgns embed`` writes) -----------------------------------------
    def image_rows(
        self, images: Sequence[ImageInput], batch_size: int = 32, local: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Per image: ``{"embedding": float32 (D,) | None, "error": str | None}`` and with
        ``local`` also ``"local"``: float32 (P, D) patch vectors. A bad input never stops the
        iteration: its row carries the reason."""
        for a in range(0, len(images), batch_size):
            chunk = images[a : a + batch_size]
            loaded = [self._image_or_reason(x) for x in chunk]
            ok = [i for i, (t, _) in enumerate(loaded) if t is not None]
            emb: dict[str, Any] = {}
            if ok:
                x = torch.stack([loaded[i][0] for i in ok]).to(self.device)
                emb = image_embeddings(self.model, x)
            pos = {i: j for j, i in enumerate(ok)}
            for i in range(len(chunk)):
                row: dict[str, Any] = {"embedding": None, "error": loaded[i][1]}
                if local:
                    row["local"] = None
                if i in pos:
                    row["embedding"] = emb["global"][pos[i]].cpu().numpy()
                    if local:
                        row["local"] = emb["local"][pos[i]].float().cpu().numpy()
                yield row

    def report_rows(
        self, reports: Sequence[str], batch_size: int = 32, local: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Per report: ``{"embedding": float32 (D,) | None, "error": str | None,
        "sentences_lost": int}`` (sentences past ``data.max_length`` / ``max_sentences``
        that the model did not see; 0 when none) and with ``local`` also ``"local"``
        float32 (S, D) sentence vectors and ``"sentences"``."""
        for a in range(0, len(reports), batch_size):
            chunk = reports[a : a + batch_size]
            parsed = [text_sentences(text) for text in chunk]
            items = self._text_prep.items([s for s, _ in parsed])
            ok = [i for i, it in enumerate(items) if it is not None]
            emb: dict[str, Any] = {}
            if ok:
                batch = self._text_prep.collate([items[i] for i in ok])
                emb = text_embeddings(self.model, to_device(batch, self.device))
            pos = {i: j for j, i in enumerate(ok)}
            for i in range(len(chunk)):
                row: dict[str, Any] = {"embedding": None, "error": None, "sentences_lost": 0}
                if i in pos:
                    j = pos[i]
                    row["embedding"] = emb["global"][j].cpu().numpy()
                    # sentences past max_length / max_sentences the model never saw
                    row["sentences_lost"] = len(parsed[i][0]) - int(items[i]["num_sentences"])
                    if local:
                        n = int(emb["sentence_mask"][j].sum())
                        row["local"] = emb["sentences"][j, :n].float().cpu().numpy()
                        row["sentences"] = parsed[i][0][:n]
                else:
                    row["error"] = parsed[i][1] or "report_empty: no token after cleaning"
                    if local:
                        row["local"], row["sentences"] = None, parsed[i][0]
                yield row

    # -- the public one-liners -----------------------------------------------------------
    def encode_images(self, images: Sequence[ImageInput], batch_size: int = 32) -> np.ndarray:
        """Global image embeddings: float32 (N, D), each row L2-normalised (unit length).

        ``images``: paths (JPEG, PNG, TIFF, BMP, DICOM) and/or uint8 (H, W) arrays. Raises
        ``BadInputError`` ("PATH: reason", as ``embed`` reports it) for the first input that
        cannot be read; use :meth:`image_rows` to keep going past bad inputs.
        """
        items = _as_list(images)
        return self._stack(self.image_rows(items, batch_size), items, "image")

    def encode_reports(self, reports: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Global report embeddings: float32 (N, D), each row L2-normalised.

        ``reports``: free text (sections FINDINGS / IMPRESSION are picked as ``prepare``
        does). Raises ``BadInputError`` for a report with no usable token."""
        if isinstance(reports, str):
            reports = [reports]
        return self._stack(self.report_rows(list(reports), batch_size), reports, "report")

    def _stack(
        self, rows: Iterator[dict[str, Any]], inputs: Sequence[Any], kind: str
    ) -> np.ndarray:
        out = np.zeros((len(inputs), self.embed_dim), dtype=np.float32)
        for i, row in enumerate(rows):
            if row["error"] is not None:
                name = _name(inputs[i], i) if kind == "image" else f"report {i}"
                raise BadInputError(f"{name}: {row['error']}")
            out[i] = row["embedding"]
        return out

    @staticmethod
    def similarity(images: np.ndarray, reports: np.ndarray) -> np.ndarray:
        """Cosine similarity float32 (N_img, N_txt) of two embedding matrices (N, D).

        Rows are re-normalised, so unnormalised vectors give cosines too."""
        a = np.atleast_2d(np.asarray(images, dtype=np.float32))
        b = np.atleast_2d(np.asarray(reports, dtype=np.float32))
        if a.shape[1] != b.shape[1]:
            raise BadInputError(f"similarity: dimensions differ ({a.shape[1]} vs {b.shape[1]})")
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        return a @ b.T

    @torch.no_grad()
    def attention(self, image: ImageInput, report: str) -> Attention:
        """Per-sentence attention of ``report`` over ``image``: an :class:`Attention` with maps
        float32 (S, h, w) on the patch grid (e.g. 7 x 7 for ResNet-50 at 224 px) and the S
        sentences, as ``cmcgns explain`` draws them. Raises ``BadInputError`` for an unreadable
        image, a report with no usable token, or a run whose local tokens are not image
        patches (``model.local_tokens = channel_view``)."""
        x = self.image_tensor(image)
        sentences, reason = text_sentences(report)
        items = self._text_prep.items([sentences])
        if reason is not None or items[0] is None:
            raise BadInputError(f"report: {reason or 'report_empty: no token after cleaning'}")
        batch = self._text_prep.collate(items)
        batch["images"] = x[None].expand(-1, 3, -1, -1).contiguous()
        batch = to_device(batch, self.device)
        att = self.model.attention_maps(batch)[0]  # (S, P)
        h, w = (int(v) for v in self.model.encode_image(batch["images"])["grid"])
        n = int(batch["num_sentences"][0])
        maps = att[:n].reshape(n, h, w).float().cpu().numpy()
        return Attention(maps, sentences[:n], x[0].numpy().astype(np.float32))


def _as_list(images: Sequence[ImageInput] | ImageInput) -> list[ImageInput]:
    if isinstance(images, (str, Path)) or (isinstance(images, np.ndarray) and images.ndim == 2):
        return [images]
    return list(images)


def _name(item: ImageInput, i: int) -> str:
    return f"image array {i}" if isinstance(item, np.ndarray) else str(item)


def _run_extra(path: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def resolve_location(source: str | Path, option: str | None = None) -> Path:
    """A run directory, a bundle directory, or a hub id (``org/name``) found in the local
    Hugging Face cache (never the network). Raises ``BadInputError`` when none applies, or
    when the path is a file or a folder without config.json (``option``, e.g.
    ``"--checkpoint"``, is named in the message when given)."""
    path = Path(source).expanduser()
    if path.exists():
        return input_folder(path, RUN_OR_BUNDLE, option=option, needs=("config.json",))
    text = str(source)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(text, local_files_only=True))
        except Exception:  # noqa: BLE001 - any failure means "not in the local cache"
            raise BadInputError(
                f"{text}: not a local directory and not in the local Hugging Face cache "
                "(no network at run time: download the bundle and pass its folder)"
            ) from None
    return input_folder(path, RUN_OR_BUNDLE, option=option)  # raises: not found


def load(
    source: str | Path, device: str = "cpu", *, weights: str = "auto", random_init: bool = False
) -> Model:
    """Load a pretrain run directory, an exported bundle (``cmcgns export``) or a hub id from
    the local cache. ``device``: cpu | cuda | cuda:N | auto. ``weights``: auto (best/ when the
    run has one, else last), best or last (run directories only). A bundle's ``SHA256SUMS``
    is verified first. Raises ``BadInputError`` (a missing or damaged run or bundle)."""
    from cmcgns_cli.runtime import resolve_device

    path = resolve_location(source)
    run = open_run(path, resolve_device(device), weights=weights, random_init=random_init)
    extra = _run_extra(run.path)
    bundle = extra.get("bundle") or {}
    size = int(bundle["prepared_size"]) if "prepared_size" in bundle else prepared_size(extra)
    return Model(run, size)
