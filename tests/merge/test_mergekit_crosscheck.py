"""Same recipe through mergekit 0.1.5's own CLI and through spear-mm: same tensors.

"Same" = within one unit in the last place of the output dtype. For mergekit-format recipes
spear-mm rounds the SLERP cosine the way mergekit does, so the ulp is that of each result element.
A native recipe exported to mergekit YAML is merged by spear-mm with the accurate fp64-summed
cosine while mergekit's fp32 sum is off by up to ~1e-4 relative; where coef_a·a and coef_b·b
nearly cancel, that is many ulps of the tiny result but within one ulp at the operands'
magnitude, which is what that test measures. Linear paths must agree exactly.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from spear_mm.merge.executor import run_merge
from spear_mm.merge.recipe import load_recipe

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mergekit") is None, reason="mergekit is not installed (dev extra)"
)
MERGEKIT = Path(sys.executable).with_name("mergekit-yaml")


def run_mergekit(config: Path, out: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [str(MERGEKIT), str(config), str(out)]
    if not MERGEKIT.exists():
        cmd = [sys.executable, "-m", "mergekit.scripts.run_yaml", str(config), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]


def assert_within_one_ulp(ours, theirs, base, adapted, report, dtype, operand_scale=False):
    assert set(ours) == set(theirs)
    for name in theirs:
        x, y = ours[name], theirs[name]
        assert x.dtype == y.dtype == dtype, name
        if report["tensors"][name]["path"] != "slerp":
            assert torch.equal(x, y), name
            continue
        scale = y.double().abs()
        if operand_scale:
            scale = torch.maximum(
                torch.maximum(base[name].double().abs(), adapted[name].double().abs()), scale
            )
        ulp = torch.finfo(dtype).eps * torch.exp2(
            torch.floor(torch.log2(scale.clamp_min(torch.finfo(dtype).tiny)))
        )
        assert bool(((x.double() - y.double()).abs() <= ulp).all()), name


def _compare(tmp_path, mh, pair, config: dict, dtype):
    cfg = mh.write_recipe(tmp_path / "mk.yaml", config)
    run_mergekit(cfg, tmp_path / "mk_out")
    report = run_merge(load_recipe(cfg), tmp_path / "ours", progress=False)
    assert_within_one_ulp(
        mh.load_weights(tmp_path / "ours"),
        mh.load_weights(tmp_path / "mk_out"),
        mh.load_weights(pair[0]),
        mh.load_weights(pair[1]),
        report,
        dtype,
    )
    return report


@pytest.mark.parametrize("out_dtype", ["bfloat16", "float32"])
def test_slerp_gradients_and_filters_match_mergekit(tmp_path, mh, pair, out_dtype):
    base, adapted = (str(p) for p in pair)
    config = {
        "merge_method": "slerp",
        "base_model": base,
        "slices": [
            {
                "sources": [
                    {"model": base, "layer_range": [0, 3]},
                    {"model": adapted, "layer_range": [0, 3]},
                ],
                "parameters": {
                    "t": [
                        {"filter": "self_attn", "value": [0.1, 0.9, 0.5]},
                        {"filter": "mlp", "value": 0.3},
                        {"value": [0.2, 0.7]},
                    ]
                },
            },
            {
                "sources": [
                    {"model": base, "layer_range": [3, 4]},
                    {"model": adapted, "layer_range": [3, 4]},
                ],
                "parameters": {"t": [{"filter": "mlp", "value": 0.0}]},
            },
        ],
        "parameters": {"t": 0.4},
        "dtype": "float32",
        "out_dtype": out_dtype,
    }
    report = _compare(tmp_path, mh, pair, config, getattr(torch, out_dtype))
    paths = report["summary"]["paths"]
    assert paths.get("slerp", 0) > 10 and paths.get("lerp", 0) > 0 and paths.get("copy", 0) > 0


def test_linear_models_form_matches_mergekit(tmp_path, mh, untied_bf16_pair):
    base, adapted = (str(p) for p in untied_bf16_pair)
    config = {
        "merge_method": "linear",
        "dtype": "bfloat16",
        "models": [
            {
                "model": base,
                "parameters": {
                    "weight": [{"filter": "lm_head", "value": 3.0}, {"value": [1.0, 0.2]}]
                },
            },
            {"model": adapted, "parameters": {"weight": 0.6}},
        ],
    }
    _compare(tmp_path, mh, untied_bf16_pair, config, torch.bfloat16)


def test_exported_native_recipe_matches_in_mergekit(tmp_path, mh, pair):
    base, adapted = pair
    native = mh.write_recipe(
        tmp_path / "native.yaml",
        {
            "base": str(base),
            "adapted": str(adapted),
            "method": "slerp",
            "dtype": "bfloat16",
            "default": [0.9, 0.3],
            "rules": [
                {"kinds": "attention", "layers": "1-2", "t": [0.2, 0.6]},
                {"kinds": "embeddings", "action": "freeze"},
            ],
        },
    )
    exported = tmp_path / "exported.yaml"
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("spear-mm")),
            "merge",
            str(native),
            "--out",
            str(tmp_path / "ours"),
            "--export-mergekit",
            str(exported),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(exported.read_text())["merge_method"] == "slerp"
    run_mergekit(exported, tmp_path / "mk_out")
    report = run_merge(load_recipe(native), tmp_path / "ours2", progress=False)
    assert_within_one_ulp(
        mh.load_weights(tmp_path / "ours"),
        mh.load_weights(tmp_path / "mk_out"),
        mh.load_weights(base),
        mh.load_weights(adapted),
        report,
        torch.bfloat16,
        operand_scale=True,
    )


# -- task-vector methods ----------------------------------------------------------------------
def _task_vector_config(pair, method: str, dtype: str, adapted_params: dict, top: dict) -> dict:
    base, adapted = (str(p) for p in pair)
    return {
        "merge_method": method,
        "base_model": base,
        "slices": [
            {
                "sources": [
                    {"model": base, "layer_range": [0, 2]},
                    {"model": adapted, "layer_range": [0, 2], "parameters": adapted_params},
                ],
            },
            {
                "sources": [
                    {"model": base, "layer_range": [2, 4]},
                    {"model": adapted, "layer_range": [2, 4], "parameters": {"weight": 0.6}},
                ],
                "parameters": {"density": [{"filter": "mlp", "value": 0.3}, {"value": 0.8}]},
            },
        ],
        "parameters": top,
        "dtype": dtype,
    }


DETERMINISTIC = [
    ("task_arithmetic", {"weight": [{"filter": "self_attn", "value": [0.2, 0.9]}, {"value": 0.7}]}),
    (
        "ties",
        {"weight": 0.8, "density": [{"filter": "self_attn", "value": [0.1, 0.6]}, {"value": 0.5}]},
    ),
    ("breadcrumbs", {"weight": 0.9, "density": [0.4, 0.9], "gamma": 0.05}),
    ("breadcrumbs_ties", {"weight": [0.3, 1.0], "density": 0.6}),
]


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("method, params", DETERMINISTIC, ids=[m for m, _ in DETERMINISTIC])
def test_task_vector_methods_match_mergekit_bit_for_bit(tmp_path, mh, pair, method, params, dtype):
    """Per-layer gradients, filters and scopes on weight/density/gamma, lambda at the top."""
    top = {"lambda": 0.9, "density": 0.7}
    if method == "breadcrumbs_ties":
        top["normalize"] = True  # ties normalises by default; cover the division here too
    if method == "task_arithmetic":
        del top["density"]
    config = _task_vector_config(pair, method, dtype, params, top)
    if method == "task_arithmetic":
        config["slices"][1]["parameters"] = {"lambda": [0.5, 1.0]}
    cfg = mh.write_recipe(tmp_path / "mk.yaml", config)
    run_mergekit(cfg, tmp_path / "mk_out")
    report = run_merge(load_recipe(cfg), tmp_path / "ours", progress=False)
    ours, theirs = mh.load_weights(tmp_path / "ours"), mh.load_weights(tmp_path / "mk_out")
    assert set(ours) == set(theirs)
    for name in theirs:
        assert ours[name].dtype == theirs[name].dtype == getattr(torch, dtype), name
        assert torch.equal(ours[name], theirs[name]), (name, report["tensors"][name])
    assert report["summary"]["paths"] == {method: len(theirs)}


@pytest.mark.parametrize("method", ["dare_ties", "dare_linear"])
def test_dare_matches_mergekit_in_distribution(tmp_path, mh, pair, method):
    """mergekit draws DARE masks from torch's global generator, spear-mm from a per-tensor seeded
    one: the same law, not the same draw. Per tensor: the kept fraction agrees within binomial
    noise and the L1 norm of the merged task vector (rescale keeps it) agrees to fp32 rounding."""
    density = 0.4
    config = _task_vector_config(pair, method, "float32", {"weight": 0.8}, {"density": density})
    config["slices"][1]["parameters"] = {"density": density}
    cfg = mh.write_recipe(tmp_path / "mk.yaml", config)
    run_mergekit(cfg, tmp_path / "mk_out")
    report = run_merge(load_recipe(cfg), tmp_path / "ours", progress=False)
    ours, theirs = mh.load_weights(tmp_path / "ours"), mh.load_weights(tmp_path / "mk_out")
    base = mh.load_weights(pair[0])
    for name, y in theirs.items():
        d_ours, d_mk = ours[name].double() - base[name], y.double() - base[name]
        n = d_mk.numel()
        if n < 200:
            continue
        f_ours, f_mk = (d_ours != 0).double().mean(), (d_mk != 0).double().mean()
        assert abs(f_ours - f_mk) <= 6 * (2 * density * (1 - density) / n) ** 0.5, name
        assert abs(f_ours - density) <= 6 * (density * (1 - density) / n) ** 0.5, name
        l1_ours, l1_mk = d_ours.abs().sum(), d_mk.abs().sum()
        assert abs(l1_ours - l1_mk) <= 1e-4 * l1_mk, name
        assert report["tensors"][name]["seed"] == 0
