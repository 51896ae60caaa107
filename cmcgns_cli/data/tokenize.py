"""Report tokenisation: the run's tokenizer and a per-tokenizer cache of tokenised sentences.

* ``text_encoder == "scratch"``: a BERT-style WordPiece tokenizer is trained with the
  ``tokenizers`` library on the train split's sentences and saved as Hugging Face files, so
  ``transformers.AutoTokenizer.from_pretrained(RUN/tokenizer)`` loads it.
* A pretrained BERT (local directory or hub id): its own tokenizer is loaded and copied.

The corpus is tokenised once per (tokenizer, manifest) pair into a flat int32 array and
cached as ``.cache/tokens-<key>.npz`` in the prepared dataset (or in the run directory when
the dataset is read-only), so epochs and later runs never re-tokenise.
"""

from __future__ import annotations

import hashlib
import heapq
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cmcgns_cli.checksum import sha256_file
from cmcgns_cli.errors import BadInputError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CACHE_VERSION = 1


def train_wordpiece(
    sentences: Iterable[str], vocab_size: int, out_dir: Path, *, min_frequency: int = 2
) -> Any:
    """Train a lower-casing BERT WordPiece tokenizer and save it to ``out_dir``.

    Normalisation, pre-tokenisation, the WordPiece model, decoder and [CLS]/[SEP] template
    are the ``tokenizers`` library's BERT pieces. The vocabulary is learnt here by the same
    rule as the library's WordPiece trainer (BPE merges over word counts, ``##`` marking
    word-inner pieces) but with ties broken by token text: the library's trainer breaks
    ties in hash order, so the same corpus gave different vocabularies in different
    processes, and a seeded run must be repeatable. Returns the saved
    ``transformers.PreTrainedTokenizerFast``.
    """
    from tokenizers import Tokenizer, decoders
    from tokenizers.models import WordPiece
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer
    from tokenizers.processors import BertProcessing
    from transformers import PreTrainedTokenizerFast

    normalizer = BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True
    )
    pre = BertPreTokenizer()
    counts: Counter[str] = Counter()
    for sent in sentences:
        if sent:
            counts.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(sent)))
    vocab_list = learn_wordpiece_vocab(counts, int(vocab_size), min_frequency, SPECIAL_TOKENS)
    vocab = {t: i for i, t in enumerate(vocab_list)}
    backend = Tokenizer(
        WordPiece(
            vocab=vocab,
            unk_token="[UNK]",
            continuing_subword_prefix="##",
            max_input_chars_per_word=100,
        )
    )
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre
    backend.decoder = decoders.WordPiece(prefix="##")
    backend.post_processor = BertProcessing(("[SEP]", vocab["[SEP]"]), ("[CLS]", vocab["[CLS]"]))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )
    save_tokenizer(tok, out_dir)
    return tok


def learn_wordpiece_vocab(
    words: Counter[str], vocab_size: int, min_frequency: int, specials: Iterable[str]
) -> list[str]:
    """Specials, the character alphabet, then merged pieces in merge order.

    Each step merges the most frequent adjacent pair (ties: the smaller pair of strings)
    until the vocabulary is full or the best pair occurs fewer than ``min_frequency`` times.
    Pair counts are updated incrementally, touching only the words that contain the pair.
    """
    items = sorted(words.items())
    seqs = [[w[0], *("##" + c for c in w[1:])] for w, _ in items]
    freqs = [f for _, f in items]
    vocab = list(dict.fromkeys(specials))
    seen = set(vocab)
    for sym in sorted({s for seq in seqs for s in seq}):
        if sym not in seen:
            vocab.append(sym)
            seen.add(sym)
    pair_count: dict[tuple[str, str], int] = defaultdict(int)
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for i, seq in enumerate(seqs):
        for pair in zip(seq, seq[1:], strict=False):
            pair_count[pair] += freqs[i]
            where[pair].add(i)
    heap = [(-c, p) for p, c in pair_count.items()]
    heapq.heapify(heap)
    while len(vocab) < vocab_size and heap:
        neg, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -neg:
            continue  # stale entry
        if -neg < min_frequency:
            break
        a, b = pair
        merged = a + b[2:] if b.startswith("##") else a + b
        if merged not in seen:
            vocab.append(merged)
            seen.add(merged)
        changed: set[tuple[str, str]] = set()
        for i in sorted(where.pop(pair, ())):
            seq, f = seqs[i], freqs[i]
            for p in zip(seq, seq[1:], strict=False):
                pair_count[p] -= f
                changed.add(p)
                where[p].discard(i)
            out: list[str] = []
            j = 0
            while j < len(seq):
                if j + 1 < len(seq) and seq[j] == a and seq[j + 1] == b:
                    out.append(merged)
                    j += 2
                else:
                    out.append(seq[j])
                    j += 1
            seqs[i] = out
            for p in zip(out, out[1:], strict=False):
                pair_count[p] += f
                changed.add(p)
                where[p].add(i)
        for p in changed:
            c = pair_count.get(p, 0)
            if c <= 0:
                pair_count.pop(p, None)
                where.pop(p, None)
            else:
                heapq.heappush(heap, (-c, p))
    return vocab


def save_tokenizer(tok: Any, out_dir: Path) -> None:
    """Save a Hugging Face tokenizer through a temporary directory and a rename."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    if tmp.exists():
        _rmtree(tmp)
    tok.save_pretrained(str(tmp))
    if out_dir.exists():
        _rmtree(out_dir)
    os.replace(tmp, out_dir)


def load_tokenizer(path: str | os.PathLike[str]) -> Any:
    """Load a saved tokenizer directory (or a hub id, which fails clearly when offline)."""
    from transformers import AutoTokenizer

    local = Path(path).expanduser()
    try:
        # local files only: a hub id not already in the local cache fails at once, no HTTP
        tok = AutoTokenizer.from_pretrained(
            str(local if local.is_dir() else path), use_fast=True, local_files_only=True
        )
    except Exception as exc:  # OSError, ValueError for unknown layouts
        if not local.is_dir():
            raise BadInputError(
                f"--text-encoder {path}: not a local directory and not in the local Hugging "
                "Face cache (nothing is downloaded); pass --text-encoder DIR (a local BERT "
                "directory) or use --preset tiny or small (scratch text encoder)"
            ) from None
        raise BadInputError(
            f"{path}: cannot load a tokenizer ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
            "give a local BERT directory (no network at run time)"
        ) from None
    if not getattr(tok, "is_fast", False):
        raise BadInputError(f"{path}: needs a fast (Rust) tokenizer, got {type(tok).__name__}")
    for name in ("cls_token_id", "sep_token_id", "pad_token_id"):
        if getattr(tok, name, None) is None:
            raise BadInputError(f"{path}: tokenizer has no {name.removesuffix('_id')} token")
    return tok


def tokenizer_fingerprint(tok: Any) -> str:
    """A stable hash of the tokenizer's full definition (vocab, normaliser, model)."""
    return hashlib.sha256(tok.backend_tokenizer.to_str().encode("utf-8")).hexdigest()


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


@dataclass
class TokenCache:
    """Every sentence of every manifest row, tokenised without special tokens.

    Row ``r``'s sentences are ``sent_offsets[row_offsets[r] : row_offsets[r+1] + 1]`` into
    the flat ``tokens`` array.
    """

    tokens: np.ndarray  # int32 (T,)
    sent_offsets: np.ndarray  # int64 (n_sentences + 1,)
    row_offsets: np.ndarray  # int64 (n_rows + 1,)
    cls_id: int
    sep_id: int
    pad_id: int
    key: str = ""
    path: Path | None = None

    def row_sentences(self, row: int) -> list[np.ndarray]:
        a, b = int(self.row_offsets[row]), int(self.row_offsets[row + 1])
        so = self.sent_offsets
        return [self.tokens[so[i] : so[i + 1]] for i in range(a, b)]

    def row_token_count(self, row: int) -> int:
        a, b = int(self.row_offsets[row]), int(self.row_offsets[row + 1])
        return int(self.sent_offsets[b] - self.sent_offsets[a])

    def encode(
        self, row: int, max_length: int, max_sentences: int
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """``[CLS] s0 s1 ... [SEP]`` for one row: (input_ids, sentence_index, num_sentences).

        Whole sentences are kept while they fit in ``max_length`` (a first sentence longer
        than that is cut); at most ``max_sentences``; empty sentences are skipped.
        ``sentence_index`` is -1 on [CLS]/[SEP] and ``s`` on the tokens of kept sentence ``s``.
        """
        budget = max(1, int(max_length) - 2)
        pieces: list[np.ndarray] = []
        used = 0
        for sent in self.row_sentences(row):
            if len(pieces) >= max_sentences:
                break
            if len(sent) == 0:
                continue
            if used + len(sent) > budget:
                if not pieces:
                    pieces.append(sent[:budget])
                    used = budget
                break
            pieces.append(sent)
            used += len(sent)
        ids = np.empty(used + 2, dtype=np.int64)
        sidx = np.full(used + 2, -1, dtype=np.int64)
        ids[0] = self.cls_id
        pos = 1
        for s, sent in enumerate(pieces):
            ids[pos : pos + len(sent)] = sent
            sidx[pos : pos + len(sent)] = s
            pos += len(sent)
        ids[pos] = self.sep_id
        return ids, sidx, len(pieces)


def _manifest_digest(prepared: Any) -> str:
    from cmcgns_cli.data.prepared import MANIFEST

    path = Path(prepared.root) / MANIFEST
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()  # an in-memory manifest (tests): hash the sentences themselves
    for sents in prepared.manifest["sentences"]:
        h.update("\x1e".join(map(str, list(sents))).encode("utf-8"))
        h.update(b"\x1d")
    return h.hexdigest()


def token_cache(prepared: Any, tok: Any, fallback_dir: Path | None = None) -> TokenCache:
    """Load or build the token cache for ``prepared`` under tokenizer ``tok``."""
    if "sentences" not in prepared.manifest.columns:
        raise BadInputError(
            f"{Path(prepared.root) / 'manifest.parquet'}: no 'sentences' column; "
            "pretraining needs a paired image-report dataset (e.g. cmcgns prepare mimic)"
        )
    key = hashlib.sha256(
        f"{CACHE_VERSION}:{tokenizer_fingerprint(tok)}:{_manifest_digest(prepared)}".encode()
    ).hexdigest()[:20]
    name = f"tokens-{key}.npz"
    dirs = [Path(prepared.root) / ".cache"]
    if fallback_dir is not None:
        dirs.append(Path(fallback_dir) / "cache")
    ids = (tok.cls_token_id, tok.sep_token_id, tok.pad_token_id)
    for d in dirs:
        if (d / name).is_file():
            try:
                with np.load(d / name) as z:
                    return TokenCache(
                        z["tokens"],
                        z["sent_offsets"],
                        z["row_offsets"],
                        *ids,
                        key=key,
                        path=d / name,
                    )
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache is rebuilt below
    tokens, sent_offsets, row_offsets = _tokenize_manifest(prepared.manifest["sentences"], tok)
    cache = TokenCache(tokens, sent_offsets, row_offsets, *ids, key=key)
    for d in dirs:
        try:
            d.mkdir(parents=True, exist_ok=True)
            tmp = d / f".{name}.{os.getpid()}.tmp"
            with open(tmp, "wb") as fh:
                np.savez(fh, tokens=tokens, sent_offsets=sent_offsets, row_offsets=row_offsets)
            os.replace(tmp, d / name)
            cache.path = d / name
            break
        except OSError:
            continue
    return cache


def _tokenize_manifest(column: Any, tok: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    counts = np.zeros(len(column) + 1, dtype=np.int64)
    flat: list[str] = []
    for r, sents in enumerate(column):
        if sents is None or (isinstance(sents, float) and np.isnan(sents)):
            sents = []
        sents = [str(s) for s in list(sents)]
        counts[r + 1] = len(sents)
        flat.extend(sents)
    row_offsets = np.cumsum(counts)
    backend = tok.backend_tokenizer
    lengths = np.zeros(len(flat) + 1, dtype=np.int64)
    chunks: list[np.ndarray] = []
    step = 8192
    for start in range(0, len(flat), step):
        encs = backend.encode_batch(flat[start : start + step], add_special_tokens=False)
        for j, enc in enumerate(encs):
            arr = np.asarray(enc.ids, dtype=np.int32)
            lengths[start + j + 1] = len(arr)
            chunks.append(arr)
    sent_offsets = np.cumsum(lengths)
    tokens = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int32)
    return tokens, sent_offsets, row_offsets
