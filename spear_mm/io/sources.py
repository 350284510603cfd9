"""Model sources: a local Hugging Face folder, a hub id, or a named built-in.

`resolve_model(spec)` always returns a local folder with `config.json` and weights:
- an existing folder is used as is;
- a built-in name (`smollm2-135m`, `tiny-llama`) is materialized once into the cache
  (`$SPEAR_MM_HOME`, default `~/.cache/spear_mm`) and reused;
- anything shaped like a hub id (`org/name`) is downloaded with `huggingface_hub.snapshot_download`
  (safetensors and config/tokenizer files only). Offline, that fails with a one-line error.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from spear_mm.errors import UserError
from spear_mm.io import builtin

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.txt", "*.jinja"]


def cache_home() -> Path:
    return Path(os.environ.get("SPEAR_MM_HOME") or Path.home() / ".cache" / "spear_mm")


def resolve_model(spec: str | os.PathLike, *, revision: str | None = None) -> Path:
    """Local folder for a model argument (folder, built-in name or hub id)."""
    text = str(spec)
    if not text:
        raise UserError("model is empty; give a folder, a hub id or a built-in (smollm2-135m)")
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if text in builtin.BUILTINS:
        return builtin.materialize(text, cache_home())
    if _HUB_ID.match(text) and not text.startswith((".", "/", "~")):
        return _download(text, revision)
    known = ", ".join(sorted(builtin.BUILTINS))
    raise UserError(
        f"model '{text}' is not an existing folder, a built-in ({known}) or a hub id (org/name)"
    )


def _download(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo_id, revision=revision, allow_patterns=_HUB_PATTERNS)
    except Exception as exc:  # noqa: BLE001 - offline, unknown repo, gated, ...
        reason = " ".join(str(exc).split())[:200]
        raise UserError(
            f"cannot download model '{repo_id}' from the Hugging Face Hub ({type(exc).__name__}: "
            f"{reason}); give a local folder or a built-in such as smollm2-135m"
        ) from None
    return Path(folder)


def load_model(
    spec: str | os.PathLike,
    *,
    dtype: torch.dtype | str = torch.float32,
    trust_remote_code: bool = False,
    revision: str | None = None,
):
    """(model, tokenizer) for a model argument, in eval mode on the CPU.

    `trust_remote_code` stays off unless asked for: a checkpoint's own Python never runs by
    default.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from spear_mm.io.checkpoint import CheckpointReader, parse_dtype

    folder = resolve_model(spec, revision=revision)
    CheckpointReader(folder).close()  # validates the folder with one-line errors
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=parse_dtype(dtype), trust_remote_code=trust_remote_code
    )
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    model.eval()
    return model, tokenizer
