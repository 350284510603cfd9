"""Model fingerprints change with any weight, config or tokenizer change, and only then."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from spear_mm.errors import UserError
from spear_mm.eval.fingerprint import (
    model_fingerprint,
    state_fingerprint,
    tokenizer_fingerprint,
)


def test_folder_fingerprint_is_stable_and_content_based(tiny_folder, tmp_path):
    fp = model_fingerprint(tiny_folder)
    assert len(fp) == 32 and model_fingerprint(str(tiny_folder)) == fp
    copy = shutil.copytree(tiny_folder, tmp_path / "copy")
    assert model_fingerprint(copy) == fp  # location does not matter
    # Reformatting config.json does not matter either.
    cfg = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps(cfg, indent=4))
    assert model_fingerprint(copy) == fp
    # One changed weight element (a norm: a few bytes in the whole file) changes it.
    state = load_file(copy / "model.safetensors")
    name = next(n for n in sorted(state) if n.endswith("input_layernorm.weight"))
    state[name][3] += 1e-3
    save_file(state, copy / "model.safetensors", metadata={"format": "pt"})
    assert model_fingerprint(copy) != fp


def test_folder_fingerprint_sees_config_and_tokenizer(tiny_folder, tmp_path):
    fp = model_fingerprint(tiny_folder)
    a = shutil.copytree(tiny_folder, tmp_path / "a")
    cfg = json.loads((a / "config.json").read_text())
    cfg["rms_norm_eps"] = 1e-6
    (a / "config.json").write_text(json.dumps(cfg))
    assert model_fingerprint(a) != fp
    b = shutil.copytree(tiny_folder, tmp_path / "b")
    tok_cfg = json.loads((b / "tokenizer_config.json").read_text())
    tok_cfg["model_max_length"] = 17
    (b / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    assert model_fingerprint(b) != fp


def test_state_fingerprint_module_and_state_dict_agree(tiny_loaded):
    model, _ = tiny_loaded
    fp = model_fingerprint(model)
    assert fp == state_fingerprint(model.state_dict())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert state_fingerprint(state) == fp
    key = sorted(state)[0]
    state[key].view(-1)[0] += 1e-6
    assert state_fingerprint(state) != fp
    as_bf16 = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    assert state_fingerprint(as_bf16) not in (fp, state_fingerprint(state))


def test_tokenizer_fingerprint(tiny_loaded):
    _, tok = tiny_loaded
    fp = tokenizer_fingerprint(tok)
    assert fp == tokenizer_fingerprint(tok)
    tok2 = type(tok).from_pretrained(tok.name_or_path)
    tok2.add_tokens(["<extra>"])
    assert tokenizer_fingerprint(tok2) != fp


def test_bad_arguments(tmp_path):
    with pytest.raises(UserError, match="config.json"):
        model_fingerprint(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserError, match="safetensors"):
        model_fingerprint(tmp_path)
    with pytest.raises(UserError, match="model folder"):
        model_fingerprint(42)
