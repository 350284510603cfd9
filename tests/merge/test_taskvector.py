"""Task-vector kernels against independent fp64 formulas (numpy sorts, SVD, explicit loops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spear_mm.merge import taskvector as TV
from spear_mm.merge.apply import DtypePolicy, merge_tensor
from spear_mm.merge.recipe import recipe_from_dict


def _pair(shape=(48, 40), seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(shape, generator=g)
    return a, a + 0.3 * torch.randn(shape, generator=g)


def _top_k_reference(x: np.ndarray, k: int) -> np.ndarray:
    """1 where |x| is among the k largest (no ties in random data)."""
    keep = np.zeros(x.size)
    keep[np.argsort(-np.abs(x).ravel(), kind="stable")[:k]] = 1
    return keep.reshape(x.shape)


@pytest.mark.parametrize("density", [0.0, 0.001, 0.3, 0.75, 1.0])
def test_magnitude_mask_keeps_the_largest(density):
    a, b = _pair()
    d = b - a
    mask = TV.magnitude_mask(d, density)
    if density >= 1:
        assert mask is None
        return
    k = 0 if density <= 0 else max(1, int(density * d.numel()))
    assert np.array_equal(mask.numpy(), _top_k_reference(d.double().numpy(), k))


@pytest.mark.parametrize("density, gamma", [(0.5, 0.01), (0.2, 0.1), (0.95, 0.1), (0.0, 0.05)])
def test_breadcrumbs_mask_drops_both_tails(density, gamma):
    a, b = _pair(seed=1)
    d = b - a
    x = np.abs(d.double().numpy()).ravel()
    n = x.size
    keep, top = int(density * n), int(gamma * n)
    bottom = max(0, n - keep - top)  # the top cut shrinks so that density is honoured
    ref = np.zeros(n)
    ref[np.argsort(x, kind="stable")[bottom : bottom + keep]] = 1
    assert np.array_equal(TV.breadcrumbs_mask(d, density, gamma).numpy().ravel(), ref)


def test_dare_mask_law_seed_and_rescale():
    a, b = _pair((256, 256), seed=2)
    d = b - a
    m1 = TV.dare_mask(d, 0.3, TV.tensor_seed(5, "w"))
    assert torch.equal(m1, TV.dare_mask(d, 0.3, TV.tensor_seed(5, "w")))  # reproducible
    assert not torch.equal(m1, TV.dare_mask(d, 0.3, TV.tensor_seed(6, "w")))
    assert not torch.equal(m1, TV.dare_mask(d, 0.3, TV.tensor_seed(5, "v")))
    n = d.numel()
    assert abs(float(m1.mean()) - 0.3) <= 5 * (0.3 * 0.7 / n) ** 0.5
    out = TV.apply_mask(d, m1, rescale=True)
    l1 = d.double().abs().sum()
    assert abs(float(out.double().abs().sum() - l1)) <= 1e-5 * float(l1)
    assert torch.equal(out == 0, (m1 == 0) | (d == 0))


def test_l1_sum_is_exact_and_thread_independent():
    a, b = _pair((300, 1000), seed=3)
    d = b - a
    ref = float(np.abs(d.double().numpy()).sum())
    before = torch.get_num_threads()
    try:
        sums = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            sums.append(TV.l1_sum(d))
    finally:
        torch.set_num_threads(before)
    assert sums[0] == sums[1] and abs(sums[0] - ref) <= 1e-6 * ref


@pytest.mark.parametrize("shape", [(40, 24), (24, 40)])
@pytest.mark.parametrize("rank", [0, 1, 5, 24])
def test_lowrank_is_the_truncated_svd(shape, rank):
    a, b = _pair(shape, seed=4)
    d = (b - a).double()
    u, s, vh = torch.linalg.svd(d, full_matrices=False)
    ref = (u[:, :rank] * s[:rank]) @ vh[:rank]
    out = TV.lowrank(d, rank)
    assert torch.allclose(out, ref, atol=1e-10, rtol=0)
    assert torch.equal(TV.lowrank(d[0], 1), d[0])  # not a matrix: unchanged


def test_sign_election_against_a_loop():
    g = torch.Generator().manual_seed(5)
    deltas = torch.randn(3, 200, generator=g).double()
    deltas[:, :5] = 0
    keep = TV.elect_signs(deltas)
    for j in range(deltas.shape[1]):
        total = float(deltas[:, j].sum())
        elected = 1.0 if total >= 0 else -1.0
        for i in range(3):
            assert bool(keep[i, j]) == (float(np.sign(deltas[i, j])) == elected)
    assert bool(TV.elect_signs(deltas[:1]).eq(deltas[:1] != 0).all())  # one vector: nonzeros


@pytest.mark.parametrize("consensus, normalize", [(False, False), (True, True), (False, True)])
def test_task_vector_merge_formula(consensus, normalize):
    a, b = _pair(seed=6)
    a, b = a.double(), b.double()
    d = b - a
    out = TV.task_vector_merge(a, b, weight=0.6, lam=0.8, consensus=consensus, normalize=normalize)
    scale = 0.8 if normalize else 0.8 * 0.6
    assert torch.allclose(out, a + scale * d, atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    "method, params, sparse",
    [
        ("task_arithmetic", {}, lambda d: d),
        ("ties", {"density": 0.25}, lambda d: d * TV.magnitude_mask(d, 0.25)),
        ("breadcrumbs", {"density": 0.5}, lambda d: d * TV.breadcrumbs_mask(d, 0.5, 0.01)),
        ("lowrank", {"rank_fraction": 0.25}, lambda d: TV.lowrank(d, 10)),
    ],
)
def test_native_methods_are_base_plus_t_times_sparse_delta(method, params, sparse):
    """Through the recipe and merge_tensor: base + t·S(Δ) within fp32 rounding of fp64."""
    a, b = _pair(seed=7)
    recipe = recipe_from_dict(
        {"base": "b", "adapted": "a", "method": method, "default": 0.4, "parameters": params}
    )
    name = "model.layers.0.mlp.up_proj.weight"
    plan = recipe.plan([name], 1)[name]
    out, entry = merge_tensor(name, "mlp_up", a, b, plan, DtypePolicy())
    d = (b - a).double()
    ref = a.double() + 0.4 * sparse(d)
    assert out.dtype == torch.float32 and entry["path"] == method
    assert torch.allclose(out.double(), ref, atol=2e-6, rtol=0)


def test_keep_and_freeze_copy_under_a_trimming_method():
    a, b = _pair(seed=8)
    recipe = recipe_from_dict(
        {
            "base": "b",
            "adapted": "a",
            "method": "ties",
            "parameters": {"density": 0.1},
            "default": "keep",
            "rules": [{"kinds": "attention", "action": "freeze"}, {"kinds": "mlp", "t": 1.0}],
        }
    )
    names = ["model.layers.0.mlp.up_proj.weight", "model.layers.0.self_attn.q_proj.weight"]
    names.append("model.norm.weight")
    plans = recipe.plan(names, 1)
    kept, _ = merge_tensor(names[2], "norm_final", a, b, plans[names[2]], DtypePolicy())
    frozen, _ = merge_tensor(names[1], "attn_q", a, b, plans[names[1]], DtypePolicy())
    assert torch.equal(kept, b) and torch.equal(frozen, a)
    trimmed, entry = merge_tensor(names[0], "mlp_up", a, b, plans[names[0]], DtypePolicy())
    assert entry["path"] == "ties" and entry["kept"] == pytest.approx(0.1, abs=1e-3)
    assert int((trimmed != a).sum()) <= int(0.1 * a.numel())  # t = 1 with density 0.1 trims


@pytest.mark.parametrize(
    "method, params",
    [("ties", {"density": 0.3}), ("breadcrumbs", {"density": 0.5}), ("lowrank", {"rank": 2})],
)
def test_trimming_merges_are_bit_identical_across_threads(tmp_path, pair, method, params):
    from spear_mm.merge.executor import run_merge

    recipe = recipe_from_dict(
        {
            "base": str(pair[0]),
            "adapted": str(pair[1]),
            "method": method,
            "default": 0.7,
            "parameters": params,
        }
    )
    files = []
    for threads in (1, 3):
        run_merge(recipe, tmp_path / f"o{threads}", threads=threads, progress=False)
        files.append({p.name: p.read_bytes() for p in (tmp_path / f"o{threads}").glob("*.safet*")})
    assert files[0] == files[1]


def test_seeded_dare_merge_is_bit_identical_across_threads(tmp_path, mh, pair):
    from spear_mm.merge.executor import run_merge

    data = {
        "base": str(pair[0]),
        "adapted": str(pair[1]),
        "method": "dare_ties",
        "default": 0.7,
        "parameters": {"density": 0.3, "seed": 11},
    }
    recipe = recipe_from_dict(data)
    files = []
    for i, threads in enumerate((1, 3)):
        report = run_merge(recipe, tmp_path / f"o{i}", threads=threads, progress=False)
        files.append({p.name: p.read_bytes() for p in (tmp_path / f"o{i}").glob("*.safetensors")})
    assert files[0] == files[1]
    assert {e.get("seed") for e in report["tensors"].values()} == {11}
    other = recipe_from_dict({**data, "parameters": {"density": 0.3, "seed": 12}})
    run_merge(other, tmp_path / "o2", progress=False)
    first, second = mh.load_weights(tmp_path / "o0"), mh.load_weights(tmp_path / "o2")
    assert any(not torch.equal(x, first[n]) for n, x in second.items())  # another seed


@pytest.mark.parametrize("density", [0.1, 0.37, 0.8])
def test_masks_with_tied_magnitudes_follow_the_sort_like_mergekit(density):
    """bf16 deltas tie often: the kept set is the one mergekit's sort-based selection keeps
    (argsort of |Δ| in fp32, descending for TIES; sort ascending for breadcrumbs)."""
    g = torch.Generator().manual_seed(9)
    d = (torch.randint(-6, 7, (64, 50), generator=g) * 0.125).to(torch.bfloat16)
    n = d.numel()
    mag = d.abs().reshape(-1).float()
    ref = torch.zeros(n, dtype=d.dtype)
    ref[torch.argsort(mag, descending=True)[: max(1, int(density * n))]] = 1
    assert torch.equal(TV.magnitude_mask(d, density, sort_ties=True).reshape(-1), ref)
    keep, top = int(density * n), int(0.05 * n)
    bottom = max(0, n - keep - top)
    ref = torch.zeros(n, dtype=d.dtype)
    ref[torch.sort(mag).indices[bottom : bottom + keep]] = 1
    assert torch.equal(TV.breadcrumbs_mask(d, density, 0.05, sort_ties=True).reshape(-1), ref)


@pytest.mark.parametrize("density", [0.1, 0.37, 0.8])
def test_native_masks_break_ties_by_position(density):
    """Native recipes: equal magnitudes at a cut are taken lower index first (a stable sort)."""
    g = torch.Generator().manual_seed(10)
    d = (torch.randint(-6, 7, (64, 50), generator=g) * 0.125).double()
    x = np.abs(d.numpy()).ravel()
    n = x.size
    ref = np.zeros(n)
    ref[np.argsort(-x, kind="stable")[: max(1, int(density * n))]] = 1
    assert np.array_equal(TV.magnitude_mask(d, density).numpy().ravel(), ref)
    keep = int(density * n)
    bottom = max(0, n - keep - int(0.05 * n))
    ref = np.zeros(n)
    ref[np.argsort(x, kind="stable")[bottom : bottom + keep]] = 1
    assert np.array_equal(TV.breadcrumbs_mask(d, density, 0.05).numpy().ravel(), ref)
