"""Recipe ranges through the CLI: t, weight, lambda, density, gamma outside their meaningful range
are one-line exit-2 errors naming the file and the key (native and mergekit formats); going beyond
[0, 1] needs `allow_extrapolation: true`, and then the merge extrapolates as the formula says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SPEAR = str(Path(sys.executable).with_name("spear-mm"))


def cli(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(
        [SPEAR, "merge", *map(str, args)], capture_output=True, text=True, env=env, timeout=180
    )


def _native(pair, **kw):
    return {"base": str(pair[0]), "adapted": str(pair[1]), **kw}


def _mergekit(pair, method, adapted_params, **kw):
    base, adapted = (str(p) for p in pair)
    return {
        "merge_method": method,
        "base_model": base,
        "models": [{"model": base}, {"model": adapted, "parameters": adapted_params}],
        "dtype": "float32",
        **kw,
    }


BAD = [
    ("native", {"rules": [{"kinds": "mlp", "t": 1.5}]}, "rules[0].t", "allow_extrapolation"),
    ("native", {"default": [0.2, -0.1]}, "default", "outside [0, 1]"),
    (
        "native",
        {"method": "ties", "parameters": {"density": 1.2}, "allow_extrapolation": True},
        "parameters.density",
        "outside [0, 1]",
    ),
    (
        "native",
        {"method": "breadcrumbs", "rules": [{"t": 0.5, "parameters": {"gamma": -0.1}}]},
        "rules[0].parameters.gamma",
        "outside [0, 1]",
    ),
    ("native", {"method": "lerp", "parameters": {"density": 0.5}}, "parameters.density", "not a"),
    ("slerp", {"t": [{"filter": "mlp", "value": 1.2}, {"value": 0.5}]}, "t[0].value", "outside"),
    ("linear", {"weight": -0.5}, "models[1].parameters.weight", "outside"),
    ("ties", {"weight": 1.0, "density": 1.3}, "models[1].parameters.density", "outside"),
    ("task_arithmetic", {"weight": 1.4}, "models[1].parameters.weight", "allow_extrapolation"),
]


@pytest.mark.parametrize("fmt, params, key, words", BAD)
def test_out_of_range_is_one_line_exit_2(tmp_path, mh, pair, fmt, params, key, words):
    if fmt == "native":
        data = _native(pair, **params)
    elif fmt == "slerp":
        data = _mergekit(pair, "slerp", None, parameters=params)
        data["models"][1].pop("parameters")
    else:
        data = _mergekit(pair, fmt, params)
        if fmt == "linear":
            data["models"][0]["parameters"] = {"weight": 1.0}
    recipe = mh.write_recipe(tmp_path / "bad.yaml", data)
    proc = cli(recipe, "--out", tmp_path / "merged")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and str(recipe) in lines[0] and key in lines[0], lines
    assert words in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "merged").exists()


def test_native_extrapolation_with_opt_in(tmp_path, mh, pair):
    recipe = mh.write_recipe(
        tmp_path / "r.yaml",
        _native(pair, method="lerp", default=1.5, allow_extrapolation=True),
    )
    proc = cli(recipe, "--out", tmp_path / "merged", "--quiet")
    assert proc.returncode == 0, proc.stderr
    base, adapted = mh.load_weights(pair[0]), mh.load_weights(pair[1])
    for name, x in mh.load_weights(tmp_path / "merged").items():
        ref = (-0.5 * base[name].double() + 1.5 * adapted[name].double()).float()
        assert torch.allclose(x, ref, rtol=0, atol=1e-6), name


def test_mergekit_extrapolation_with_opt_in(tmp_path, mh, pair):
    data = _mergekit(pair, "task_arithmetic", {"weight": 1.0}, allow_extrapolation=True)
    data["parameters"] = {"lambda": 1.25}
    recipe = mh.write_recipe(tmp_path / "r.yaml", data)
    proc = cli(recipe, "--out", tmp_path / "merged", "--quiet")
    assert proc.returncode == 0, proc.stderr
    base, adapted = mh.load_weights(pair[0]), mh.load_weights(pair[1])
    for name, x in mh.load_weights(tmp_path / "merged").items():
        ref = base[name].double() + 1.25 * (adapted[name].double() - base[name].double())
        assert torch.allclose(x.double(), ref, rtol=0, atol=1e-6), name
