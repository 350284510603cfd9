"""Test and benchmark fixtures on top of `spear_mm.io.tiny` (re-exported here).

`make_tiny_llama` (from io.tiny) writes a tiny random LLaMA folder; `make_tiny_model` the same for
Qwen2 / Mistral / Phi-3 / Gemma2 with transformers' own config classes; `perturb_checkpoint` writes an
"adapted" copy (base + seeded relative noise, optionally with extra vocabulary rows) so merge and
analysis code can be exercised without training; `write_pseudo_corpus` writes small seeded JSONL
corpora for training tests. Everything is seeded: the same arguments give
bit-identical files.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import torch

from spear_mm.io.checkpoint import AUX_FILES, CheckpointReader, ShardedWriter
from spear_mm.io.tiny import SPECIAL_TOKENS, _write_random, make_tiny_llama, make_tokenizer

__all__ = [
    "SPECIAL_TOKENS",
    "TINY_ARCHS",
    "make_tiny_llama",
    "make_tiny_model",
    "make_tokenizer",
    "perturb_checkpoint",
    "write_pseudo_corpus",
]

# Architectures other than LLaMA for the tests that check the name map, merges and training
# on each family's own tensor names (Qwen2 biases, Phi-3 fused projections, Gemma2 extra norms).
TINY_ARCHS = ("qwen2", "mistral", "phi3", "gemma2")


def make_tiny_model(
    path: str | os.PathLike,
    arch: str,
    *,
    num_layers: int = 2,
    hidden: int = 64,
    tie_embeddings: bool = False,
    seed: int = 0,
) -> Path:
    """Write a tiny random model of family `arch` (one of `TINY_ARCHS`), built with
    transformers' own config class, with the byte-level tokenizer."""
    from transformers import Gemma2Config, MistralConfig, Phi3Config, Qwen2Config

    classes = {"qwen2": Qwen2Config, "mistral": MistralConfig, "phi3": Phi3Config,
               "gemma2": Gemma2Config}  # fmt: skip
    if arch not in classes:
        raise ValueError(f"arch {arch!r}: use one of {', '.join(TINY_ARCHS)}")
    tok = make_tokenizer()
    extra = {"head_dim": hidden // 4} if arch == "gemma2" else {}
    config = classes[arch](
        vocab_size=272,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=tie_embeddings,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **extra,
    )
    return _write_random(path, config, tok, seed=seed)


def perturb_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    scale: float = 0.01,
    seed: int = 1,
    grow_vocab: int = 0,
    layer_scales: dict[int, float] | None = None,
    max_shard_bytes: int | str = 5 * 10**9,
) -> Path:
    """Write `src` plus seeded noise of relative size `scale` (per tensor: scale·std·N(0,1)).

    `layer_scales` overrides the scale for given layer indices. `grow_vocab` appends that many
    rows to the embedding (and an untied lm_head), as when CPT adds tokens.
    """
    from spear_mm.io.archmap import classify

    gen = torch.Generator().manual_seed(seed)
    src, dst = Path(src), Path(dst)
    with CheckpointReader(src) as reader:
        config = dict(reader.config)
        if grow_vocab:
            config["vocab_size"] = int(config["vocab_size"]) + grow_vocab
        with ShardedWriter(dst, max_shard_bytes=max_shard_bytes, config=config) as writer:
            for name, tensor in reader.iter_tensors():
                info = classify(name)
                s = scale
                if layer_scales and info.layer in layer_scales:
                    s = layer_scales[info.layer]
                t32 = tensor.float()
                spread = t32.std() if t32.numel() > 1 else t32.abs().mean()
                noisy = t32 + s * float(spread) * torch.randn(t32.shape, generator=gen)
                if grow_vocab and info.kind in ("embed", "lm_head"):
                    extra = 0.05 * torch.randn((grow_vocab, t32.shape[1]), generator=gen)
                    noisy = torch.cat([noisy, extra], dim=0)
                writer.add(name, noisy.to(tensor.dtype))
            for aux in AUX_FILES:
                if (src / aux).is_file():
                    (writer.tmp / aux).write_bytes((src / aux).read_bytes())
    return dst


PSEUDO_WORDS = [
    "market",
    "bond",
    "equity",
    "loan",
    "interest",
    "rate",
    "asset",
    "ledger",
    "stock",
    "dividend",
    "price",
    "share",
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "by",
    "for",
    "with",
    "on",
    "at",
    "from",
]


def write_pseudo_corpus(
    path: Path, n_docs: int, seed: int, prefix: str = "", max_words: int = 120
) -> Path:
    """`n_docs` seeded pseudo-text documents (20..max_words finance-flavoured words) as JSONL
    (`text` field), for training tests."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n_docs):
            words = [rng.choice(PSEUDO_WORDS) for _ in range(rng.randint(20, max_words))]
            fh.write(json.dumps({"text": f"{prefix}{i}: " + " ".join(words) + "."}) + "\n")
    return path
