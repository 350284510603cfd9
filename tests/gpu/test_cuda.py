"""GPU parity checks: CUDA merges (streaming and in-memory), analyzer signals, a bf16 CPT run.

Every check compares the CUDA result with the CPU result of the same code on the same tiny
models (`spear_mm.testing`), so a GPU-only numerical or placement bug shows up as a difference.
The whole module is skipped where CUDA is not available (CI runs on CPU).

Expectations, and why:
- LERP and copies are bit-identical: each output element is two fp32 products and one fp32 sum,
  done by separate elementwise kernels (no fused multiply-add), then one round-to-nearest-even to
  bf16 — IEEE-exact on both devices.
- SLERP / row-wise SLERP may differ in rare elements: their cosines, norms, atan2 and sinc come
  from reductions and math routines whose fp32 rounding differs between devices (a few fp32
  ulps), which moves a result across a bf16 rounding boundary. Measured on an H200 (torch 2.11):
  row-wise ≤ 1 ulp (7 elements of the pair); whole-tensor SLERP 2 ulp in 2 elements of one
  tensor, where ca·a + cb·b nearly cancels (this random pair is far from parallel, so the
  coefficients are large and of opposite sign), so a 1e-7 change of a coefficient is more than
  one ulp of the small result. Hence the per-method tolerance ULP_TOL, and at most 0.1% of the
  elements may differ at all.
- Analyzer signals agree to rtol 1e-4; `svdr` also gets atol 1e-6: it sums differences of nearly
  equal singular values, and on the CPU alone fp32 vs fp64 already moves it by 1.1e-4 relative
  (1.6e-7 absolute) on this pair.

Environment:
- `SPEAR_MM_GPU_REPORT=path.json` writes what was measured (ulps, relative errors, losses).
- `SPEAR_MM_TEST_DEVICE=cpu` runs the same comparisons CPU against CPU: a dry run of this file's
  own code on a machine without a GPU, not a GPU check.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

DEVICE = os.environ.get("SPEAR_MM_TEST_DEVICE", "cuda")
ULP_TOL = {"lerp": 0, "slerp": 2, "slerp_rowwise": 1}  # measured on an H200: see the docstring
pytestmark = pytest.mark.skipif(
    DEVICE.startswith("cuda") and not torch.cuda.is_available(),
    reason="needs a CUDA device",
)

METHODS = ("lerp", "slerp", "slerp_rowwise")
SIGNALS = ("rel_drift", "cosine", "snr_base", "snr_adapted", "svdr", "top_drift", "out_drift")
VECTOR_SIGNALS = ("rel_drift", "cosine", "mean_abs_log_gain")
_INT_VIEW = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}


# ----------------------------------------------------------------------------- helpers
def ulp_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-element distance in units in the last place between same-dtype float tensors.

    The bit patterns are mapped to integers that are ordered like the floats (sign-magnitude to
    two's complement), so consecutive floats differ by 1 and +0 / -0 both map to 0.
    """
    assert x.dtype == y.dtype and x.shape == y.shape, (x.dtype, y.dtype, x.shape, y.shape)
    bits = _INT_VIEW[x.dtype]
    mask = torch.iinfo(bits).max

    def ordered(t: torch.Tensor) -> torch.Tensor:
        i = t.detach().cpu().contiguous().view(bits).to(torch.int64)
        mag = i & mask
        return torch.where(i < 0, -mag, mag)

    return (ordered(x) - ordered(y)).abs()


def compare_tensors(want: dict, got: dict) -> dict:
    """{name: (max ulp, differing elements)} for two same-named sets of tensors."""
    assert set(want) == set(got), set(want) ^ set(got)
    out = {}
    for name, w in want.items():
        g = got[name]
        assert g.dtype == w.dtype and g.shape == w.shape, name
        d = ulp_distance(w, g)
        out[name] = (int(d.max()) if d.numel() else 0, int((d > 0).sum()))
    return out


def summarize_ulps(diffs: dict) -> dict:
    return {
        "tensors": len(diffs),
        "bit_identical_tensors": sum(1 for m, _ in diffs.values() if m == 0),
        "max_ulp": max((m for m, _ in diffs.values()), default=0),
        "differing_elements": sum(n for _, n in diffs.values()),
    }


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        out.update(load_file(f))
    return out


def recipe_data(pair, method: str) -> dict:
    """A gradient over layers, an embedding rule and a frozen layer: kernels and copies."""
    return {
        "base": str(pair[0]),
        "adapted": str(pair[1]),
        "method": method,
        "default": [0.2, 0.9],
        "rules": [{"kinds": "embeddings", "t": 0.4}, {"layers": 1, "action": "freeze"}],
    }


def load(tmp_path: Path, pair, method: str):
    from spear_mm.merge.recipe import load_recipe

    path = tmp_path / f"{method}.yaml"
    path.write_text(yaml.safe_dump(recipe_data(pair, method), sort_keys=False))
    return load_recipe(path)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def record():
    """Collects measurements; written as JSON to $SPEAR_MM_GPU_REPORT at the end (if set)."""
    found: dict = {"device": DEVICE}
    if DEVICE.startswith("cuda"):
        found["gpu"] = torch.cuda.get_device_name(0)
        found["torch"] = torch.__version__
        found["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
    yield found
    target = os.environ.get("SPEAR_MM_GPU_REPORT")
    if target:
        Path(target).write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")


@pytest.fixture(scope="module")
def bf16_pair(tmp_path_factory):
    """Untied bf16 pair, sharded; embedding / lm_head / MLP tensors span more than one kernel
    block (BLOCK = 2^18 elements), so the blocked loops and tails run. Noise of 0.3·std makes
    whole-tensor SLERP take its spherical path (norm weights still fall back to LERP)."""
    from spear_mm.testing import make_tiny_llama, perturb_checkpoint

    root = tmp_path_factory.mktemp("gpu_pair")
    base = make_tiny_llama(
        root / "base",
        num_layers=3,
        hidden=256,
        intermediate=1152,
        vocab_size=1100,
        heads=4,
        kv_heads=2,
        tie_embeddings=False,
        seed=11,
        dtype=torch.bfloat16,
        max_shard_bytes=2_000_000,
    )
    adapted = perturb_checkpoint(
        base, root / "adapted", scale=0.3, seed=12, max_shard_bytes=3_000_000
    )
    return base, adapted


# ----------------------------------------------------------------------------- the ulp helper
def test_ulp_distance_counts_representable_steps():
    x = torch.tensor([1.0, -2.5, 0.0, 3e-3, -0.0], dtype=torch.float32)
    up = torch.nextafter(x, torch.full_like(x, math.inf))
    assert ulp_distance(x, up).tolist() == [1, 1, 1, 1, 1]
    assert ulp_distance(x, x).tolist() == [0] * 5
    b = torch.tensor([1.0, -1.0, 0.0], dtype=torch.bfloat16)
    b_up = (b.view(torch.int16) + torch.tensor([1, 1, 0], dtype=torch.int16)).view(torch.bfloat16)
    assert ulp_distance(b, b_up).tolist() == [1, 1, 0]  # -1 + 1 bit is one step away from zero
    assert float(b_up[0]) == 1.0 + 2.0**-7  # one bf16 ulp at 1.0


# ----------------------------------------------------------------------------- a. streaming merge
@pytest.mark.parametrize("method", METHODS)
def test_streaming_merge_on_cuda_matches_cpu(tmp_path, bf16_pair, method, record):
    from spear_mm.merge.executor import run_merge

    recipe = load(tmp_path, bf16_pair, method)
    rep_cpu = run_merge(recipe, tmp_path / "cpu", device="cpu", threads=2, progress=False)
    rep_dev = run_merge(recipe, tmp_path / "dev", device=DEVICE, threads=2, progress=False)
    cpu, dev = load_weights(tmp_path / "cpu"), load_weights(tmp_path / "dev")
    assert all(t.dtype == torch.bfloat16 for t in dev.values())
    diffs = compare_tensors(cpu, dev)
    summary = summarize_ulps(diffs)
    record[f"streaming_{method}"] = summary
    print(f"streaming {method}: {summary}")

    kernel = [n for n, e in rep_cpu["tensors"].items() if e["path"] != "copy"]
    assert len(kernel) > len(cpu) // 2  # the comparison covers real kernel work
    for name, entry in rep_cpu["tensors"].items():
        other = rep_dev["tensors"][name]
        assert other["path"] == entry["path"], name  # same SLERP / fallback decisions
        if "cos" in entry:
            assert other["cos"] == pytest.approx(entry["cos"], rel=1e-5, abs=1e-7), name
        if entry["path"] == "copy":
            assert diffs[name][0] == 0, name
    tol = ULP_TOL[method]
    assert summary["max_ulp"] <= tol, {n: d for n, d in diffs.items() if d[0] > tol}
    assert summary["differing_elements"] <= 1e-3 * sum(t.numel() for t in cpu.values())


# ----------------------------------------------------------------------------- b. in-memory merge
@pytest.fixture(scope="module")
def mergers(bf16_pair):
    """(CPU merger, merger whose bf16 model lives on DEVICE) over the same held weights."""
    from transformers import AutoModelForCausalLM

    from spear_mm.io.checkpoint import CheckpointReader
    from spear_mm.merge.inmemory import InMemoryMerger

    with CheckpointReader(bf16_pair[0]) as r:
        base_state = r.state_dict()
    with CheckpointReader(bf16_pair[1]) as r:
        adapted_state = r.state_dict()
    out = []
    for device in ("cpu", DEVICE):
        model = AutoModelForCausalLM.from_pretrained(bf16_pair[1], dtype=torch.bfloat16)
        model.to(device).eval()
        out.append(InMemoryMerger(model, base_state, adapted_state))
    return tuple(out)


def _params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters()}


def _on_device(model) -> bool:
    want = torch.device(DEVICE).type
    return all(p.device.type == want for p in model.parameters())


@pytest.mark.parametrize("method", METHODS)
def test_inmemory_merge_on_cuda_matches_cpu(tmp_path, bf16_pair, mergers, method, record):
    cpu_m, dev_m = mergers
    recipe = load(tmp_path, bf16_pair, method)
    rep_cpu, rep_dev = cpu_m.apply(recipe), dev_m.apply(recipe)
    assert _on_device(dev_m.model)  # merged in place: nothing moved back to the CPU
    diffs = compare_tensors(_params(cpu_m.model), _params(dev_m.model))
    summary = summarize_ulps(diffs)
    record[f"inmemory_{method}"] = summary
    print(f"in-memory {method}: {summary}")
    assert rep_cpu["summary"]["paths"] == rep_dev["summary"]["paths"]
    tol = ULP_TOL[method]
    assert summary["max_ulp"] <= tol, {n: d for n, d in diffs.items() if d[0] > tol}
    assert summary["differing_elements"] <= 1e-3 * sum(t.numel() for t in cpu_m.model.parameters())


def test_inmemory_layer_t_on_cuda_matches_cpu_fast_path(mergers, record):
    """The CPU merger takes the in-place LERP fast path, the CUDA one the general kernel path;
    both are documented to give the disk executor's bits."""
    cpu_m, dev_m = mergers
    layer_t = [0.3, 0.8, 0.55]
    cpu_m.apply_layer_t(layer_t, other_t=0.6)
    dev_m.apply_layer_t(layer_t, other_t=0.6)
    assert _on_device(dev_m.model)
    diffs = compare_tensors(_params(cpu_m.model), _params(dev_m.model))
    record["inmemory_layer_t"] = summarize_ulps(diffs)
    assert all(m == 0 for m, _ in diffs.values()), diffs
    dev_m.reset()
    adapted = dev_m.adapted_state
    for name, p in _params(dev_m.model).items():
        assert torch.equal(p.cpu(), adapted[name].to(p.dtype)), name


# ----------------------------------------------------------------------------- c. analyzer
@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_analyzer_signals_on_cuda_match_cpu(tiny_pair, mode, record):
    from spear_mm.analyze.stream import resolve_device, stream_signals
    from spear_mm.io.checkpoint import CheckpointReader

    if DEVICE.startswith("cuda"):
        assert resolve_device("auto").type == "cuda"  # the analyzer's default picks the GPU
    with CheckpointReader(tiny_pair[0]) as b, CheckpointReader(tiny_pair[1]) as a:
        cpu, _ = stream_signals(b, a, device="cpu", svd_mode=mode)
        dev, summary = stream_signals(b, a, device=DEVICE, svd_mode=mode)
    assert summary["device"].startswith(DEVICE)
    assert [r.name for r in cpu] == [r.name for r in dev]
    worst: dict[str, float] = {}
    n_matrices = 0
    for rc, rd in zip(cpu, dev):
        keys = SIGNALS if "snr_base" in rc.signals else VECTOR_SIGNALS
        n_matrices += keys is SIGNALS
        if keys is SIGNALS:
            assert rd.signals["n_signal"] == rc.signals["n_signal"], rc.name
        for key in keys:
            want, got = rc.signals[key], rd.signals[key]
            assert math.isfinite(got), (rc.name, key)
            rel = abs(got - want) / max(abs(want), 1e-30)
            worst[key] = max(worst.get(key, 0.0), rel)
            atol = 1e-6 if key == "svdr" else 0.0
            assert got == pytest.approx(want, rel=1e-4, abs=atol), (rc.name, key, want, got)
    assert n_matrices >= 20  # 4 layers × 7 projections + the embedding
    record[f"analyzer_{mode}_max_rel"] = worst
    print(f"analyzer {mode}: worst relative differences {worst}")


# ----------------------------------------------------------------------------- d. CPT steps
def _write_corpus(path: Path) -> Path:
    """Two documents (one is held out for validation): a few blocks of the same text."""
    words = ["the", "bond", "market", "rate", "of", "interest", "on", "a", "loan", "is", "set"]
    with open(path, "w", encoding="utf-8") as fh:
        for d in range(2):
            text = " ".join(words[(i * 7 + d) % len(words)] for i in range(60))
            fh.write(json.dumps({"text": f"doc {d}: {text}."}) + "\n")
    return path


def test_cpt_steps_bf16_on_cuda_loss_decreases(tmp_path, record):
    from transformers import AutoTokenizer

    from spear_mm.testing import make_tiny_llama
    from spear_mm.train.config import DataConfig, ModelConfig, TrainConfig, TrainerConfig
    from spear_mm.train.data import build_data
    from spear_mm.train.loop import Trainer
    from spear_mm.train.metrics import read_metrics

    model = make_tiny_llama(tmp_path / "model", num_layers=2, hidden=128, seed=7)
    data = DataConfig(domain=str(_write_corpus(tmp_path / "c.jsonl")), general=None, seq_len=64)
    # One batch = every training block, so each step sees the same batch.
    n_blocks = len(build_data(data, AutoTokenizer.from_pretrained(model)).domain)
    assert 2 <= n_blocks <= 16
    steps = 10
    cfg = TrainConfig(
        model=ModelConfig(name=str(model)),
        data=data,
        trainer=TrainerConfig(
            max_steps=steps,
            batch_size=n_blocks,
            lr=3e-3,
            warmup_steps=0,
            mixed_precision="bf16",
            eval_at_start=False,
            progress=False,
        ),
        out=str(tmp_path / "run"),
        seed=0,
    )
    trainer = Trainer(cfg)
    try:
        trainer.setup()
        assert trainer.acc.device.type == torch.device(DEVICE).type
        assert str(trainer.acc.mixed_precision) == "bf16"
        assert _on_device(trainer.model)
        last = trainer.train()
    finally:
        trainer.cleanup()
    losses = [r["loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in r]
    record["cpt_losses"] = losses
    print(f"CPT losses ({n_blocks} blocks a step): {[round(x, 4) for x in losses]}")
    assert len(losses) == steps and all(math.isfinite(x) for x in losses)
    assert math.isfinite(last["val_loss"])
    rises = sum(b >= a for a, b in zip(losses, losses[1:]))
    assert rises <= 1, losses  # a repeated batch: (almost) every step lowers the loss
    assert losses[-1] < 0.7 * losses[0], losses
    assert (tmp_path / "run" / "final" / "config.json").is_file()
