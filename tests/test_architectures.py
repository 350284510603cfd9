"""Families beyond LLaMA, built with transformers' own config classes: Qwen2 (q/k/v biases, tied
and untied), Mistral, Phi-3 (fused qkv_proj / gate_up_proj) and Gemma2 (extra norms, no SDPA).

Each goes through the name map, a native merge with a `kinds:` rule, a mergekit recipe cross-
checked against `mergekit-yaml`, the analyzer and a 2-step `train`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from spear_mm.cli.main import main
from spear_mm.io.archmap import classify
from spear_mm.merge.executor import run_merge
from spear_mm.merge.recipe import load_recipe
from spear_mm.testing import make_tiny_model, perturb_checkpoint, write_pseudo_corpus

ARCHS = [("qwen2", False), ("qwen2", True), ("mistral", False), ("phi3", False), ("gemma2", True)]
IDS = [f"{a}-{'tied' if t else 'untied'}" for a, t in ARCHS]


@pytest.fixture(scope="module", params=ARCHS, ids=IDS)
def arch_pair(request, tmp_path_factory):
    arch, tied = request.param
    root = tmp_path_factory.mktemp(f"{arch}_{tied}")
    base = make_tiny_model(root / "base", arch, tie_embeddings=tied, seed=0)
    # Noise large enough (cos ~ 0.96) that whole-tensor SLERP takes its spherical path.
    adapted = perturb_checkpoint(base, root / "adapted", scale=0.3, seed=1)
    return arch, base, adapted


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        out.update(load_file(f))
    return out


def test_every_tensor_has_a_known_kind(arch_pair):
    arch, base, _ = arch_pair
    kinds = {name: classify(name).kind for name in _weights(base)}
    assert "other" not in kinds.values(), kinds
    expected = {"phi3": {"attn_qkv", "mlp_gate_up"}, "gemma2": {"norm_ffn_pre", "norm_ffn_post"}}
    assert expected.get(arch, {"attn_q", "mlp_up"}) <= set(kinds.values())
    if arch == "qwen2":
        assert classify("model.layers.0.self_attn.q_proj.bias").param == "bias"


def test_kinds_rule_freezes_every_attention_tensor_of_layer_0(arch_pair, tmp_path):
    _, base, adapted = arch_pair
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "base": str(base),
                "adapted": str(adapted),
                "method": "lerp",
                "default": "keep",
                "rules": [{"layers": 0, "kinds": "attention", "action": "freeze"}],
            }  # fmt: skip
        )
    )
    report = run_merge(load_recipe(recipe), tmp_path / "out", progress=False)
    assert report["unclassified_tensors"] == []
    ours, b, a = _weights(tmp_path / "out"), _weights(base), _weights(adapted)
    frozen = [n for n in ours if classify(n).layer == 0 and classify(n).group == "attention"]
    assert len(frozen) >= 2  # Phi-3: qkv_proj and o_proj; Qwen2: weights and biases
    for name, tensor in ours.items():
        assert torch.equal(tensor, b[name] if name in frozen else a[name]), name


def test_unclassified_tensors_are_listed_when_a_kinds_rule_is_used(tiny_pair, tmp_path):
    base, adapted = tiny_pair
    # Same model, one tensor renamed to something no family has: the rule cannot see it.
    for src, name in ((base, "base"), (adapted, "adapted")):
        dst = tmp_path / name
        dst.mkdir()
        for f in src.iterdir():
            if f.suffix != ".safetensors":
                (dst / f.name).write_bytes(f.read_bytes())
        tensors = load_file(src / "model.safetensors")
        tensors["model.layers.0.mixer.weight"] = tensors.pop("model.layers.0.mlp.up_proj.weight")
        from safetensors.torch import save_file

        save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "base": str(tmp_path / "base"),
                "adapted": str(tmp_path / "adapted"),
                "rules": [{"layers": 0, "kinds": "mlp", "action": "freeze"}],
            }  # fmt: skip
        )
    )
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("spear-mm")), "merge", str(recipe), "--out",
         str(tmp_path / "m")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    warning = [x for x in proc.stderr.splitlines() if x.startswith("warning:")]
    assert len(warning) == 1 and "model.layers.0.mixer.weight" in warning[0]


@pytest.mark.skipif(importlib.util.find_spec("mergekit") is None, reason="no mergekit (dev)")
def test_mergekit_slerp_with_filters_matches_mergekit_yaml(arch_pair, tmp_path):
    _, base, adapted = arch_pair
    config = {
        "merge_method": "slerp",
        "base_model": str(base),
        "slices": [{
            "sources": [{"model": str(base), "layer_range": [0, 2]},
                        {"model": str(adapted), "layer_range": [0, 2]}],
            "parameters": {"t": [{"filter": "self_attn", "value": [0.2, 0.8]},
                                 {"filter": "mlp", "value": 0.3}, {"value": 0.6}]},
        }],
        "parameters": {"t": 0.4},
        "dtype": "float32",
    }  # fmt: skip
    cfg = tmp_path / "mk.yaml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    mergekit = Path(sys.executable).with_name("mergekit-yaml")
    proc = subprocess.run(
        [str(mergekit), str(cfg), str(tmp_path / "mk")],
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = run_merge(load_recipe(cfg), tmp_path / "ours", progress=False)
    ours, theirs = _weights(tmp_path / "ours"), _weights(tmp_path / "mk")
    assert set(ours) == set(theirs)
    for name, y in theirs.items():
        x = ours[name]
        if report["tensors"][name]["path"] != "slerp":
            assert torch.equal(x, y), name
            continue
        # One fp32 ulp at each element's magnitude (mergekit's own cosine is used).
        ulp = torch.finfo(torch.float32).eps * torch.exp2(
            torch.floor(torch.log2(y.double().abs().clamp_min(1e-30)))
        )
        assert bool(((x.double() - y.double()).abs() <= ulp).all()), name
    assert report["summary"]["paths"].get("slerp", 0) > 0


def test_analyze_ranks_every_layer_and_keeps_biases_apart(arch_pair, tmp_path):
    arch, base, adapted = arch_pair
    out = tmp_path / "an"
    assert main(["analyze", f"base={base}", f"adapted={adapted}", f"out={out}", "plot=false"]) == 0
    layers = json.loads((out / "analysis.json").read_text())["layers"]
    assert len(layers) == 2
    if arch == "qwen2":
        for f in layers:  # the weight's and the bias's drift are separate features
            assert f["rel_drift:attn_q"] != f["rel_drift:attn_q.bias"]
            assert "rel_drift:attn_k.bias" in f and "rel_drift:attn_v.bias" in f


def test_two_training_steps(arch_pair, tmp_path):
    arch, base, _ = arch_pair
    corpus = write_pseudo_corpus(tmp_path / "d.jsonl", 30, seed=1, prefix="fin")
    args = ["train", f"model={base}", f"data.domain={corpus}", "data.general=null",
            "data.seq_len=32", "data.val_max_blocks=2", "trainer.max_steps=2",
            "trainer.batch_size=2", "trainer.progress=false", f"out={tmp_path / 'cpt'}"]  # fmt: skip
    assert main(args) == 0
    final = tmp_path / "cpt" / "final"
    config = json.loads((final / "config.json").read_text())
    assert config["model_type"] == json.loads((base / "config.json").read_text())["model_type"]
    # The config states what the weights are stored in (fp32 masters), so from_pretrained agrees.
    assert (config.get("dtype") or config.get("torch_dtype")) == "float32"
    stored = {t.dtype for t in _weights(final).values()}
    assert stored == {torch.float32}


def test_explicit_sdpa_falls_back_to_eager_with_a_note(arch_pair, tmp_path, capsys):
    arch, base, _ = arch_pair
    if arch != "gemma2":
        pytest.skip("only Gemma2 refuses SDPA in transformers 5.x")
    corpus = write_pseudo_corpus(tmp_path / "d.jsonl", 20, seed=1)
    args = ["train", f"model={base}", "model.attn_implementation=sdpa", f"data.domain={corpus}",
            "data.general=null", "data.seq_len=32", "data.val_max_blocks=2",
            "trainer.max_steps=1", "trainer.batch_size=2", "trainer.progress=false",
            f"out={tmp_path / 'cpt'}"]  # fmt: skip
    assert main(args) == 0
    assert "using eager attention" in capsys.readouterr().err
