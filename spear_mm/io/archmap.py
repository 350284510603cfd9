"""Which layer and which kind of module each tensor belongs to (LLaMA family).

Covers the Hugging Face names of LLaMA-2/3.x, SmolLM2, Mistral and Qwen2-style models
(`model.layers.{i}.self_attn.q_proj.weight`, `...mlp.down_proj.weight`, `...input_layernorm.weight`,
`model.embed_tokens.weight`, `model.norm.weight`, `lm_head.weight`). Qwen2's q/k/v biases map to
their projection's kind. Anything unknown is kind `other` and is still merged by rules that select
it by regex.
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
    "mlp_gate": "mlp",
    "mlp_up": "mlp",
    "mlp_down": "mlp",
    "norm_attn": "norm",
    "norm_mlp": "norm",
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
    ("mlp.gate_proj.", "mlp_gate"),
    ("mlp.up_proj.", "mlp_up"),
    ("mlp.down_proj.", "mlp_down"),
    ("input_layernorm.", "norm_attn"),
    ("post_attention_layernorm.", "norm_mlp"),
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


def layer_of(names, layer: int) -> list[str]:
    """Names of the tensors of one block."""
    return [n for n in names if classify(n).layer == layer]
