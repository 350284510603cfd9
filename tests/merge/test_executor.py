"""The streaming disk merge: endpoints, reference values, tied embeddings, vocabulary growth,
sharded inputs, determinism, errors that leave nothing behind."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from safetensors.torch import load_file

from spear_mm.errors import UserError
from spear_mm.io.archmap import classify
from spear_mm.merge.executor import REPORT_FILE, run_merge
from spear_mm.merge.recipe import load_recipe


def merge(tmp_path, data, out="out", **kw):
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    report = run_merge(load_recipe(path), tmp_path / out, progress=False, **kw)
    return load_weights(tmp_path / out), report


def load_weights(folder):
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


@pytest.mark.parametrize("default, which", [("freeze", 0), ("keep", 1), (0.0, 0), (1.0, 1)])
def test_endpoints_bit_exact(tmp_path, pair, default, which):
    base, adapted = pair
    out, report = merge(tmp_path, {"base": str(base), "adapted": str(adapted), "default": default})
    want = load_weights(pair[which])
    assert set(out) == set(want)
    for name, tensor in want.items():
        assert torch.equal(out[name], tensor), name
    assert report["summary"]["paths"] == {"copy": len(want)}


def test_values_match_fp64_slerp_and_report(tmp_path, pair):
    base, adapted = pair
    out, report = merge(
        tmp_path,
        {
            "base": str(base),
            "adapted": str(adapted),
            "default": 0.35,
            "rules": [{"kinds": "mlp", "t": 0.8, "method": "lerp"}],
        },
    )
    b, a = load_weights(base), load_weights(adapted)
    on_disk = json.loads((tmp_path / "out" / REPORT_FILE).read_text())
    assert on_disk["tensors"] == report["tensors"]
    for name, tensor in out.items():
        x, y = b[name].double().flatten(), a[name].double().flatten()
        cos = float(x @ y / (x.norm() * y.norm()))
        entry = report["tensors"][name]
        assert entry["cos"] == pytest.approx(cos, abs=1e-6)
        t = 0.8 if classify(name).group == "mlp" else 0.35
        if entry["method"] == "slerp" and abs(cos) <= 0.9995:
            th = math.acos(cos)
            ref = (math.sin((1 - t) * th) * x + math.sin(t * th) * y) / math.sin(th)
            assert entry["path"] == "slerp"
        else:
            ref = (1 - t) * x + t * y
            assert entry["path"] == "lerp"
            assert entry.get("fallback", False) == (entry["method"] == "slerp")
        torch.testing.assert_close(tensor.double().flatten(), ref, rtol=2e-6, atol=2e-6)
    assert report["summary"]["slerp_fallbacks"] >= 1  # norms are nearly parallel here


def test_tied_embeddings_stay_tied(tmp_path, pair):
    base, adapted = pair
    out, report = merge(
        tmp_path,
        {
            "base": str(base),
            "adapted": str(adapted),
            "default": 0.5,
            "rules": [{"kinds": "lm_head", "action": "freeze"}],
        },
    )
    assert "lm_head.weight" not in out and report["tied_embeddings"] is True
    assert report["unmatched_rules"] == ["rules[0]"]  # the tied lm_head is the embedding
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["tie_word_embeddings"] is True
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert torch.equal(model.lm_head.weight, out["model.embed_tokens.weight"])


def test_untied_sharded_bf16(tmp_path, untied_bf16_pair):
    base, adapted = untied_bf16_pair
    assert len(list(base.glob("*.safetensors"))) > 1
    out, report = merge(
        tmp_path,
        {
            "base": str(base),
            "adapted": str(adapted),
            "default": 0.5,
            "rules": [{"kinds": "lm_head", "t": 0.25}],
        },
        shard_size="100KB",
    )
    assert len(list((tmp_path / "out").glob("model-*.safetensors"))) > 1
    assert (tmp_path / "out" / "model.safetensors.index.json").is_file()
    b, a = load_weights(base), load_weights(adapted)
    assert set(out) == set(a) and "lm_head.weight" in out
    for name, tensor in out.items():
        assert tensor.dtype == torch.bfloat16
        t = 0.25 if name == "lm_head.weight" else 0.5
        if report["tensors"][name]["path"] == "lerp":
            ref = (1 - t) * b[name].double() + t * a[name].double()
            torch.testing.assert_close(tensor.double(), ref, rtol=8e-3, atol=1e-5)


def test_output_dtype_key(tmp_path, pair):
    base, adapted = pair
    out, report = merge(
        tmp_path,
        {"base": str(base), "adapted": str(adapted), "default": "freeze", "dtype": "bfloat16"},
    )
    b = load_weights(base)
    for name, tensor in out.items():
        assert torch.equal(tensor, b[name].to(torch.bfloat16))
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"


@pytest.mark.parametrize("default", ["freeze", 0.4])
def test_vocab_growth_keeps_new_rows(tmp_path, grown_pair, default):
    base, adapted = grown_pair
    out, report = merge(
        tmp_path, {"base": str(base), "adapted": str(adapted), "default": default, "method": "lerp"}
    )
    b, a = load_weights(base), load_weights(adapted)
    t = 0.0 if default == "freeze" else default
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        v = b[name].shape[0]
        assert out[name].shape == a[name].shape and a[name].shape[0] == v + 16
        assert torch.equal(out[name][v:], a[name][v:])  # new rows: adapted, whatever t
        ref = (1 - t) * b[name].double() + t * a[name][:v].double()
        torch.testing.assert_close(out[name][:v].double(), ref, rtol=1e-6, atol=1e-7)
        assert report["tensors"][name]["new_rows"] == 16
    assert report["vocab_growth"]["new_rows"]["lm_head.weight"] == 16


def test_vocab_shrink_is_an_error(tmp_path, grown_pair):
    base, adapted = grown_pair
    with pytest.raises(
        UserError, match=r"(embed_tokens|lm_head).weight: shape \[288, 64\] in base"
    ):
        merge(tmp_path, {"base": str(adapted), "adapted": str(base), "default": 0.5})
    assert not (tmp_path / "out").exists()


def test_bit_identical_across_runs_and_threads(tmp_path, untied_bf16_pair):
    base, adapted = untied_bf16_pair
    data = {
        "base": str(base),
        "adapted": str(adapted),
        "default": [0.2, 0.9],
        "rules": [{"kinds": "mlp", "method": "slerp_rowwise", "t": 0.6}],
    }
    runs = [("t1", 1, None), ("t3", 3, None), ("t1b", 1, None), ("paged", 3, False)]
    for out, threads, direct in runs:  # direct=False: through the page cache, same bytes
        merge(tmp_path, data, out=out, threads=threads, shard_size="100KB", direct_io=direct)
    files = sorted(p.name for p in (tmp_path / "t1").iterdir())
    for out, _, _ in runs[1:]:
        assert sorted(p.name for p in (tmp_path / out).iterdir()) == files
        for name in files:
            if name == REPORT_FILE:  # names its own recipe file; the rest must agree
                rep = [json.loads((tmp_path / o / name).read_text()) for o in (out, "t1")]
                assert rep[0]["tensors"] == rep[1]["tensors"]
                continue
            assert (tmp_path / out / name).read_bytes() == (tmp_path / "t1" / name).read_bytes()


def test_default_workers_follow_the_cpus_this_process_may_use(tmp_path, pair, monkeypatch):
    """No `threads`: one worker per CPU of the process's affinity mask, at most
    MAX_AUTO_THREADS; the merge runs with that many."""
    import os

    from spear_mm.merge import executor

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert executor.default_threads() == executor.MAX_AUTO_THREADS
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {5}, raising=False)
    assert executor.default_threads() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    used = []
    real_stream = executor._stream

    def spy_stream(job, writer, policy, threads, *rest):
        used.append(threads)
        return real_stream(job, writer, policy, threads, *rest)

    monkeypatch.setattr(executor, "_stream", spy_stream)
    base, adapted = pair
    merge(tmp_path, {"base": str(base), "adapted": str(adapted), "default": 0.5})
    assert used == [3]


def test_bad_recipe_writes_nothing(tmp_path, pair):
    base, adapted = pair
    with pytest.raises(UserError, match=r"rules\[0\].layers"):
        merge(
            tmp_path,
            {"base": str(base), "adapted": str(adapted), "rules": [{"layers": 9, "t": 0.5}]},
        )
    with pytest.raises(UserError, match="not an existing folder"):
        merge(tmp_path, {"base": str(tmp_path / "missing"), "adapted": str(adapted)})
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_nan_output_is_an_error_and_writes_nothing(tmp_path, pair):
    base, adapted = pair
    recipe = {
        "merge_method": "linear",
        "models": [
            {"model": str(base), "parameters": {"weight": 0.0}},
            {
                "model": str(adapted),
                "parameters": {
                    "weight": [{"filter": "layers.1.mlp.up", "value": 0.0}, {"value": 1.0}]
                },
            },
        ],
    }
    with pytest.raises(UserError, match="model.layers.1.mlp.up_proj.weight.*NaN"):
        merge(tmp_path, recipe)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_existing_output_needs_force(tmp_path, pair):
    base, adapted = pair
    data = {"base": str(base), "adapted": str(adapted), "default": "freeze"}
    merge(tmp_path, data)
    with pytest.raises(UserError, match="--force"):
        merge(tmp_path, data)
    data["default"] = "keep"
    out, _ = merge(tmp_path, data, force=True)
    assert torch.equal(out["model.norm.weight"], load_weights(adapted)["model.norm.weight"])


def test_relative_model_paths_resolve_beside_recipe(tmp_path, pair, monkeypatch):
    base, adapted = pair
    monkeypatch.chdir(tmp_path)
    recipe_dir = base.parent
    path = recipe_dir / "rel.yaml"
    path.write_text(yaml.safe_dump({"base": base.name, "adapted": adapted.name, "default": "keep"}))
    run_merge(load_recipe(path), tmp_path / "rel_out", progress=False)
    assert (tmp_path / "rel_out" / "merge_recipe.yaml").read_text() == path.read_text()
