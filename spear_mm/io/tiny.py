"""A tiny random LLaMA with an offline byte-level tokenizer: the `tiny-llama` built-in.

`make_tiny_llama` writes a complete Hugging Face folder (config, safetensors, tokenizer) that
`AutoModelForCausalLM.from_pretrained` loads and can generate from. It is a product feature (the
`tiny-llama` model preset, `experiment=tiny`, the quickstart walkthrough), so it lives in io/;
`spear_mm.testing` builds its test fixtures on it. Everything is seeded: the same arguments give
bit-identical files.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from spear_mm.io.checkpoint import CheckpointReader, ShardedWriter

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def make_tokenizer():
    """A byte-level tokenizer (256 byte symbols + 3 specials) built offline, deterministically."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token=None,
        pad_token="<|endoftext|>",
        model_max_length=2048,
    )


def make_tiny_llama(
    path: str | os.PathLike,
    *,
    num_layers: int = 2,
    hidden: int = 64,
    intermediate: int | None = None,
    heads: int = 4,
    kv_heads: int = 2,
    vocab_size: int = 272,
    tie_embeddings: bool = True,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    max_shard_bytes: int | str | None = None,
) -> Path:
    """Write a tiny random `LlamaForCausalLM` with a byte-level tokenizer to `path`.

    Norm weights are drawn around 1 (not all ones) so norm signals are not degenerate. With
    `max_shard_bytes` the weights are re-written as a sharded checkpoint.
    """
    from transformers import LlamaConfig

    tok = make_tokenizer()
    if vocab_size < len(tok):
        raise ValueError(f"vocab_size {vocab_size} < tokenizer size {len(tok)}")
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate or 2 * hidden,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=tie_embeddings,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        rms_norm_eps=1e-5,
    )
    return _write_random(path, config, tok, seed=seed, dtype=dtype, max_shard_bytes=max_shard_bytes)


def _write_random(
    path, config, tok, *, seed: int, dtype=torch.float32, max_shard_bytes=None
) -> Path:
    """Save a model of `config` with seeded weights (norm gains around 1) and `tok`."""
    from transformers import AutoModelForCausalLM

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.1 * torch.randn(param.shape, generator=gen))
            else:
                param.copy_(0.05 * torch.randn(param.shape, generator=gen))
    model = model.to(dtype)
    path = Path(path)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    if max_shard_bytes is not None:
        _reshard(path, max_shard_bytes)
    return path


def _reshard(path: Path, max_shard_bytes: int | str) -> None:
    tmp = path.with_name(path.name + ".resharding")
    with (
        CheckpointReader(path) as reader,
        ShardedWriter(tmp, source_dir=path, max_shard_bytes=max_shard_bytes) as writer,
    ):
        for name, tensor in reader.iter_tensors():
            writer.add(name, tensor)
    import shutil

    shutil.rmtree(path)
    os.replace(tmp, path)
