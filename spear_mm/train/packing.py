"""Pure token-stream kernels: document wrapping, packing, validation split, replay schedule.

No I/O and no tokenizer here — lists of token ids in, tensors and indices out — so every rule
below is tested exactly.

Packing: documents (each already wrapped as `[BOS] tokens [EOS]`) are concatenated in order into
one stream and cut into blocks of `seq_len` tokens. A document may span two blocks (GPT-style
packing; attention is not masked at document boundaries, the EOS/BOS tokens mark them).
Remainder policy: the last `< seq_len` tokens of the stream are dropped (`drop`, the default: at
most `seq_len - 1` tokens lost per stream), or kept in one final block filled with the pad id
whose pad positions carry label -100 and therefore no loss (`pad`).

Replay: a fraction `r` of the training blocks comes from general text. Block position `p` of the
infinite training stream is general exactly when `floor((p+1)·r) > floor(p·r)`, so every prefix
of `k` blocks holds exactly `floor(k·r)` general blocks — the token ratio is exact up to one
block at any stopping point, independent of the seed. Each source is read in its own seeded
permutation, re-shuffled each time it is exhausted (an "epoch" of that source).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch

IGNORE_INDEX = -100


def wrap_document(ids: Sequence[int], bos: int | None, eos: int | None) -> list[int]:
    """`[bos] + ids + [eos]`, each special only when given (None = no such token)."""
    out = [] if bos is None else [bos]
    out.extend(ids)
    if eos is not None:
        out.append(eos)
    return out


@dataclass(frozen=True)
class PackedBlocks:
    """`tokens[i]` is block i (int32, `[n, seq_len]`); `lengths[i]` its count of real tokens."""

    tokens: torch.Tensor
    lengths: torch.Tensor

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def n_tokens(self) -> int:
        """Real (non-pad) tokens in all blocks."""
        return int(self.lengths.sum())

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(input_ids, labels)` as int64 for the given block indices; pads labelled -100."""
        ids = self.tokens[idx].long()
        labels = ids.clone()
        pos = torch.arange(ids.shape[1]).unsqueeze(0)
        labels[pos >= self.lengths[idx].unsqueeze(1)] = IGNORE_INDEX
        return ids, labels


def pack(docs: Sequence[Sequence[int]], seq_len: int, remainder: str, pad_id: int) -> PackedBlocks:
    """Concatenate wrapped documents and cut the stream into `seq_len` blocks (see module doc)."""
    if seq_len <= 0:
        raise ValueError("seq_len must be positive")
    total = sum(len(d) for d in docs)
    stream = torch.empty(total, dtype=torch.int32)
    at = 0
    for d in docs:
        stream[at : at + len(d)] = torch.as_tensor(list(d), dtype=torch.int32)
        at += len(d)
    n_full, rest = divmod(total, seq_len)
    tokens = stream[: n_full * seq_len].view(n_full, seq_len)
    lengths = torch.full((n_full,), seq_len, dtype=torch.int64)
    if rest and remainder == "pad":
        last = torch.full((1, seq_len), pad_id, dtype=torch.int32)
        last[0, :rest] = stream[n_full * seq_len :]
        tokens = torch.cat([tokens, last])
        lengths = torch.cat([lengths, torch.tensor([rest])])
    elif remainder not in ("drop", "pad"):
        raise ValueError(f"unknown remainder policy {remainder!r}")
    return PackedBlocks(tokens.contiguous(), lengths)


def split_documents(n_docs: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Hold out whole documents: `(train_idx, val_idx)`, both sorted, disjoint, seeded.

    At least one document goes to each side; fewer than two documents cannot be split.
    """
    if n_docs < 2:
        raise ValueError(f"need at least 2 documents to hold out a validation split, got {n_docs}")
    n_val = min(n_docs - 1, max(1, round(n_docs * val_fraction)))
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n_docs, generator=gen).tolist()
    return sorted(perm[n_val:]), sorted(perm[:n_val])


def as_fraction(ratio: float) -> Fraction:
    """The replay ratio as an exact fraction (its shortest decimal spelling: 0.1 → 1/10)."""
    return Fraction(repr(float(ratio))).limit_denominator(1_000_000)


def general_before(position: int, ratio: Fraction) -> int:
    """How many of stream positions `[0, position)` are general blocks: `floor(position·r)`."""
    return math.floor(position * ratio)


class BlockStream:
    """Maps a position of the infinite training stream to `(source, block index)`.

    Source 0 is the domain, 1 is general replay. Pure function of `(position, seed)`: resuming
    at step s needs no saved iterator, only s.
    """

    def __init__(self, n_domain: int, n_general: int, ratio: float, seed: int):
        self.ratio = as_fraction(ratio)
        if n_domain <= 0:
            raise ValueError("the domain stream has no blocks")
        if self.ratio > 0 and n_general <= 0:
            raise ValueError("replay asked for but the general stream has no blocks")
        self.sizes = (n_domain, n_general)
        self.seed = seed
        self._perms: dict[tuple[int, int], list[int]] = {}

    def _perm(self, source: int, epoch: int) -> list[int]:
        key = (source, epoch)
        if key not in self._perms:
            if len(self._perms) > 8:  # a few epochs are live at once; keep memory flat
                self._perms.pop(next(iter(self._perms)))
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 2 + source)
            self._perms[key] = torch.randperm(self.sizes[source], generator=gen).tolist()
        return self._perms[key]

    def locate(self, position: int) -> tuple[int, int]:
        """`(source, block index)` of stream position `position` (0-based)."""
        g_before = general_before(position, self.ratio)
        is_general = general_before(position + 1, self.ratio) > g_before
        source = 1 if is_general else 0
        k = g_before if is_general else position - g_before
        epoch, i = divmod(k, self.sizes[source])
        return source, self._perm(source, epoch)[i]

    def positions_per_domain_epoch(self) -> float:
        """Stream positions that consume the domain blocks once (replay included)."""
        return self.sizes[0] / float(1 - self.ratio)
