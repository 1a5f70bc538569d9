"""PGSeg's text side: image-caption pairs, a word tokenizer saved with the checkpoint, and a small causal text
transformer with end-of-text pooling (CLIP's text encoder, PGSeg Sec. 5.1: "the same as [39]").

The world's captions are templated (a few hundred distinct words), so a word-level tokenizer built from the
training captions replaces CLIP's BPE here. Users with CC12M-style pairs would use a BPE tokenizer and a larger
encoder (12 layers, width 256 in the paper); this module's :class:`CaptionPairs` accepts any image dataset whose
ids key a ``captions.jsonl`` (the world, or ``load_dataset("folder", root)`` with ``ROOT/captions.jsonl`` keyed by
each image's path relative to ROOT without suffix).
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nbseg.errors import ConfigError, DataError
from nbseg.pretrain.caption_tags import read_captions

SPECIALS = ("<pad>", "<sot>", "<eot>", "<unk>")
PAD, SOT, EOT, UNK = range(4)
MAX_WORD_BYTES = 24
_WORD = re.compile(r"[a-z]+")


def words_of(text: str) -> list[str]:
    """Lower-case alphabetic words of a caption ("A red ball, on grass." -> ["a", "red", "ball", "on", "grass"])."""
    return _WORD.findall(text.lower())


class WordTokenizer(nn.Module):
    """Word -> id over a fixed-size table. The words live in the buffer ``table`` ((V, 24) uint8, zero-padded
    UTF-8), so a checkpoint carries its tokenizer: a model rebuilt from it encodes exactly as in training.
    Ids 0-3 are ``<pad> <sot> <eot> <unk>``; unknown words map to ``<unk>``."""

    def __init__(self, vocab_size: int, context_length: int):
        super().__init__()
        self.vocab_size, self.context_length = vocab_size, context_length
        self.register_buffer("table", torch.zeros(vocab_size, MAX_WORD_BYTES, dtype=torch.uint8))
        self._cache: tuple[int, dict[str, int]] | None = None

    def fit(self, captions, extra_words=()) -> "WordTokenizer":
        """Fill the table with the most frequent words of ``captions`` (ties: alphabetical), ``extra_words``
        (prompt words) first. More words than ``vocab_size - 4`` is an error naming the fix."""
        counts = Counter(w for c in captions for w in words_of(c))
        words = list(dict.fromkeys([*extra_words, *sorted(counts, key=lambda w: (-counts[w], w))]))
        if len(words) > self.vocab_size - len(SPECIALS):
            raise ConfigError(f"the captions hold {len(words)} distinct words but vocab_size is {self.vocab_size}: "
                              f"set vocab_size >= {len(words) + len(SPECIALS)}")
        table = torch.zeros_like(self.table)
        for i, word in enumerate([*SPECIALS, *words]):
            data = word.encode()[:MAX_WORD_BYTES]
            table[i, :len(data)] = torch.tensor(list(data), dtype=torch.uint8)
        self.table.copy_(table)
        return self

    @property
    def vocabulary(self) -> dict[str, int]:
        key = hash(self.table.cpu().numpy().tobytes())
        if self._cache is None or self._cache[0] != key:
            rows = self.table.cpu().numpy()
            words = [bytes(r[r > 0]).decode() for r in rows]
            self._cache = (key, {w: i for i, w in enumerate(words) if w})
        return self._cache[1]

    def encode(self, texts: list[str]) -> torch.Tensor:
        """texts -> (N, context_length) int64: ``<sot> words... <eot> <pad>...``; long texts are cut so that
        ``<eot>`` (the pooled position) is always present. An empty table is an error (train first)."""
        vocab = self.vocabulary
        if len(vocab) <= len(SPECIALS):
            raise ConfigError("the tokenizer is empty: it is filled from the training captions when training starts "
                              "(or loaded from a checkpoint)")
        out = torch.full((len(texts), self.context_length), PAD, dtype=torch.long)
        for n, text in enumerate(texts):
            ids = [SOT, *(vocab.get(w, UNK) for w in words_of(text))][:self.context_length - 1] + [EOT]
            out[n, :len(ids)] = torch.tensor(ids)
        return out

    def unknown(self, texts: list[str]) -> list[str]:
        """Words of ``texts`` the tokenizer does not know (they become ``<unk>``)."""
        vocab = self.vocabulary
        return sorted({w for t in texts for w in words_of(t) if w not in vocab})


class CausalBlock(nn.Module):
    """Pre-norm transformer block with a causal mask: ``x + MHSA(LN(x), mask)``, then ``x + MLP(LN(x))``."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TextEncoder(nn.Module):
    """Tokens (B, L) -> text embedding Z^t (B, E): token + position embeddings, ``depth`` causal blocks, LayerNorm,
    the ``<eot>`` position's feature (end-of-text pooling, CLIP), then a linear projection to E."""

    def __init__(self, vocab_size: int, context_length: int, width: int, depth: int, heads: int, embed_dim: int):
        super().__init__()
        self.tokenizer = WordTokenizer(vocab_size, context_length)
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.randn(context_length, width) * 0.01)
        self.blocks = nn.ModuleList(CausalBlock(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.projection = nn.Linear(width, embed_dim, bias=False)
        self.register_buffer("causal_mask", torch.full((context_length, context_length), float("-inf")).triu(1),
                             persistent=False)

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, width) the final-norm feature at each sequence's ``<eot>``."""
        x = self.token_embedding(tokens) + self.positional_embedding[:tokens.shape[1]]
        mask = self.causal_mask[:tokens.shape[1], :tokens.shape[1]]
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x)
        eot = (tokens == EOT).long().argmax(dim=1)
        return x[torch.arange(x.shape[0], device=x.device), eot]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.projection(self.features(tokens))

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Strings -> (N, E) text embeddings (not normalised)."""
        return self(self.tokenizer.encode(texts).to(self.positional_embedding.device))


# ----------------------------------------------------------------------------------------------------------
# Image-caption pairs
# ----------------------------------------------------------------------------------------------------------

def captions_for(dataset, captions_file: str | Path | None = None) -> dict[str, list[str]]:
    """The captions of every image of ``dataset`` (ids -> captions) from ``captions_file`` (default
    ``dataset.root / "captions.jsonl"``); an image without captions is an error naming it and the file."""
    path = Path(captions_file) if captions_file else Path(dataset.root) / "captions.jsonl"
    table = read_captions(path)
    missing = [i for i in dataset.ids if not table.get(i)]
    if missing:
        raise DataError(f"{len(missing)} image(s) of {dataset.root} have no captions in {path} (first: "
                        f"{missing[0]!r}). Fix: add a {{\"id\": ..., \"captions\": [...]}} line per image (ids are paths "
                        "relative to the root without suffix), or regenerate the world with `nbseg world`")
    return {i: table[i] for i in dataset.ids}


class CaptionPairs(torch.utils.data.Dataset):
    """(image, caption) pairs: ``pairs[(index, seed)] -> {"image": (3, H, W) in [0, 1], "tokens": (L,)}``. The
    caption is one of the image's captions drawn with ``seed`` (a new one each epoch), the image flipped
    horizontally with probability 1/2 (captions name no sides). Random crops are left out: a crop can cut away
    an object the caption names, and the world's images are already at the training size."""

    def __init__(self, dataset, captions: dict[str, list[str]], tokenizer: WordTokenizer, size: int | None = None):
        self.dataset, self.captions, self.tokenizer, self.size = dataset, captions, tokenizer, size
        self.name = f"{getattr(dataset, 'name', 'images')} + captions"

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item) -> dict:
        index, seed = item if isinstance(item, tuple) else (item, 0)
        rng = np.random.default_rng(seed)
        sample = self.dataset[index]
        image = sample.image
        if self.size is not None and tuple(image.shape[-2:]) != (self.size, self.size):
            image = torch.nn.functional.interpolate(image[None], size=(self.size, self.size), mode="bilinear",
                                                    align_corners=False, antialias=True)[0]
        if rng.random() < 0.5:
            image = image.flip(-1)
        caps = self.captions[sample.id]
        caption = caps[int(rng.integers(len(caps)))]
        return {"image": image, "tokens": self.tokenizer.encode([caption])[0]}


__all__ = ["WordTokenizer", "TextEncoder", "CausalBlock", "CaptionPairs", "captions_for", "words_of", "SPECIALS",
           "PAD", "SOT", "EOT", "UNK"]
