"""Which layer and which kind of module each tensor belongs to (decoder LLMs on the Hub).

Covers the Hugging Face names of LLaMA-2/3.x, SmolLM2, Mistral, Qwen2, Phi-3 and Gemma2
(`model.layers.{i}.self_attn.q_proj.weight`, `...mlp.down_proj.weight`, `...input_layernorm.weight`,
`model.embed_tokens.weight`, `model.norm.weight`, `lm_head.weight`), table in docs/recipes.md:
- Phi-3's fused projections are kinds of their own: `qkv_proj` → `attn_qkv` (attention),
  `gate_up_proj` → `mlp_gate_up` (mlp).
- Gemma2's extra norms: `pre_feedforward_layernorm` → `norm_ffn_pre`, `post_feedforward_layernorm`
  → `norm_ffn_post` (group norm). Its `post_attention_layernorm` keeps the LLaMA name's kind
  `norm_mlp` (classification is by name; the group is norm either way). Qwen3/Gemma3-style
  `q_norm` / `k_norm` are `norm_qk`.
- A bias (Qwen2's q/k/v) has its projection's kind, so `kinds:` rules move weight and bias
  together; `TensorInfo.param` tells them apart (`weight` / `bias`) for per-tensor statistics.
Anything unknown is kind `other`: still merged by rules that select it by regex, and listed by
`spear-mm merge` when a `kinds:` rule cannot see it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# kind → group (the coarse names recipes use)
KIND_GROUP = {
    "attn_q": "attention",
    "attn_k": "attention",
    "attn_v": "attention",
    "attn_o": "attention",
    "attn_qkv": "attention",
    "mlp_gate": "mlp",
    "mlp_up": "mlp",
    "mlp_down": "mlp",
    "mlp_gate_up": "mlp",
    "norm_attn": "norm",
    "norm_mlp": "norm",
    "norm_ffn_pre": "norm",
    "norm_ffn_post": "norm",
    "norm_qk": "norm",
    "norm_final": "norm",
    "embed": "embeddings",
    "lm_head": "lm_head",
    "other": "other",
}
GROUPS = ("attention", "mlp", "norm", "embeddings", "lm_head", "other")
KINDS = tuple(KIND_GROUP)

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_SUFFIX_KIND = (
    ("self_attn.q_proj.", "attn_q"),
    ("self_attn.k_proj.", "attn_k"),
    ("self_attn.v_proj.", "attn_v"),
    ("self_attn.o_proj.", "attn_o"),
    ("self_attn.qkv_proj.", "attn_qkv"),
    ("self_attn.q_norm.", "norm_qk"),
    ("self_attn.k_norm.", "norm_qk"),
    ("mlp.gate_proj.", "mlp_gate"),
    ("mlp.up_proj.", "mlp_up"),
    ("mlp.down_proj.", "mlp_down"),
    ("mlp.gate_up_proj.", "mlp_gate_up"),
    ("input_layernorm.", "norm_attn"),
    ("post_attention_layernorm.", "norm_mlp"),
    ("pre_feedforward_layernorm.", "norm_ffn_pre"),
    ("post_feedforward_layernorm.", "norm_ffn_post"),
)


@dataclass(frozen=True)
class TensorInfo:
    """A tensor's place in the model: layer index (None outside the blocks), kind and group."""

    name: str
    layer: int | None
    kind: str

    @property
    def group(self) -> str:
        return KIND_GROUP[self.kind]

    @property
    def param(self) -> str:
        """`bias` for a bias vector, else `weight` (kinds cover both; statistics keep them apart)."""
        return "bias" if self.name.endswith(".bias") else "weight"


def classify(name: str) -> TensorInfo:
    """Layer index and kind of a tensor from its Hugging Face name."""
    match = _LAYER.search(name)
    if match:
        layer = int(match.group(1))
        rest = name[match.end() :]
        for prefix, kind in _SUFFIX_KIND:
            if rest.startswith(prefix):
                return TensorInfo(name, layer, kind)
        return TensorInfo(name, layer, "other")
    if name.endswith("embed_tokens.weight"):
        return TensorInfo(name, None, "embed")
    if name.startswith("lm_head."):
        return TensorInfo(name, None, "lm_head")
    if re.search(r"(?:^|\.)norm\.weight$", name):
        return TensorInfo(name, None, "norm_final")
    return TensorInfo(name, None, "other")


def num_layers(config: dict) -> int:
    """Number of transformer blocks from a config dict."""
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if key in config:
            return int(config[key])
    text_config = config.get("text_config")
    if isinstance(text_config, dict):
        return num_layers(text_config)
    raise KeyError("config has no num_hidden_layers")


def is_tied(config: dict, names) -> bool:
    """True when lm_head shares the embedding matrix (config flag, or no lm_head tensor stored)."""
    names = set(names)
    if "lm_head.weight" not in names and any(n.endswith("embed_tokens.weight") for n in names):
        return True
    return bool(config.get("tie_word_embeddings", False))
