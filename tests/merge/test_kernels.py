"""Kernels against independent fp64 formulas, exact endpoints, fallback, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from spear_mm.merge import kernels as K


def ref_slerp64(a: torch.Tensor, b: torch.Tensor, t: float, threshold: float = 0.9995):
    """Textbook SLERP on the flattened tensors in fp64 (linear above the threshold)."""
    x, y = a.double().flatten(), b.double().flatten()
    cos = float(x @ y / (x.norm() * y.norm()))
    if abs(cos) > threshold:
        return ((1 - t) * x + t * y).reshape(a.shape), cos
    theta = math.acos(cos)
    out = (math.sin((1 - t) * theta) * x + math.sin(t * theta) * y) / math.sin(theta)
    return out.reshape(a.shape), cos


def ref_rowwise64(a: torch.Tensor, b: torch.Tensor, t: float):
    x, y = a.double().reshape(a.shape[0], -1), b.double().reshape(b.shape[0], -1)
    out = torch.empty_like(x)
    for r in range(x.shape[0]):
        cos = float(x[r] @ y[r] / (x[r].norm() * y[r].norm()))
        theta = math.acos(max(-1.0, min(1.0, cos)))
        if theta < 1e-12:
            out[r] = (1 - t) * x[r] + t * y[r]
        else:
            out[r] = (math.sin((1 - t) * theta) * x[r] + math.sin(t * theta) * y[r]) / math.sin(
                theta
            )
    return out.reshape(a.shape)


def _pair(shape, noise, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(shape, generator=g)
    b = a + noise * torch.randn(shape, generator=g)
    return a.to(dtype), b.to(dtype)


@pytest.mark.parametrize("t", [0.0, 0.25, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("noise", [0.5, 1.5])
def test_slerp_matches_fp64_formula(t, noise):
    a, b = _pair((300, 70), noise)  # not a multiple of the reduction row: exercises the tail
    out, st = K.slerp(a, b, t)
    ref, cos = ref_slerp64(a, b, t)
    assert st.path == "slerp" and not st.fallback
    assert st.cos == pytest.approx(cos, abs=1e-7)
    torch.testing.assert_close(out.double(), ref, rtol=2e-6, atol=2e-6)


def test_slerp_falls_back_to_lerp_above_threshold():
    a, b = _pair((64, 64), 0.01)
    out, st = K.slerp(a, b, 0.3)
    ref, cos = ref_slerp64(a, b, 0.3)
    assert cos > 0.9995 and st.fallback and st.path == "lerp"
    torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-7)
    lerp_out, _ = K.lerp(a, b, 0.3)
    assert torch.equal(out, lerp_out)


def test_endpoints_are_exact():
    a, b = _pair((50, 40), 0.7, dtype=torch.bfloat16)
    for kernel in (K.lerp, K.slerp, K.slerp_rowwise):
        assert torch.equal(kernel(a, b, 0.0, out_dtype=torch.bfloat16)[0], a)
        assert torch.equal(kernel(a, b, 1.0, out_dtype=torch.bfloat16)[0], b)


def test_lerp_formula_and_cosine():
    a, b = _pair((1000, 33), 0.2, seed=2)
    out, st = K.lerp(a, b, 0.37)
    x, y = a.double(), b.double()
    torch.testing.assert_close(out.double(), 0.63 * x + 0.37 * y, rtol=1e-6, atol=1e-7)
    ref_cos = float((x.flatten() @ y.flatten()) / (x.norm() * y.norm()))
    assert st.cos == pytest.approx(ref_cos, abs=1e-7)


def test_inputs_not_modified():
    a, b = _pair((20, 30), 0.5)
    a0, b0 = a.clone(), b.clone()
    for kernel in (K.lerp, K.slerp, K.slerp_rowwise):
        kernel(a, b, 0.4)
    K.linear(a, b, 0.3, 0.7)
    assert torch.equal(a, a0) and torch.equal(b, b0)


@pytest.mark.parametrize("t", [0.2, 0.5, 0.8])
def test_rowwise_matches_fp64_formula(t):
    a, b = _pair((40, 96), 0.4, seed=3)
    b[5] = a[5]  # an unchanged row: θ = 0 must give exactly LERP, no 0/0
    out, st = K.slerp_rowwise(a, b, t)
    torch.testing.assert_close(out.double(), ref_rowwise64(a, b, t), rtol=2e-6, atol=2e-6)
    assert torch.isfinite(out).all()
    one_d, _ = K.slerp_rowwise(a[0], b[0], t)  # 1-D tensors are a single row
    torch.testing.assert_close(
        one_d.double(), ref_rowwise64(a[:1], b[:1], t)[0], rtol=2e-6, atol=2e-6
    )


def test_rowwise_angle_is_accurate_for_nearly_parallel_rows():
    # Row r of b is row r of a rotated by a known small angle inside the (e0, e1) plane.
    angles = torch.tensor([1e-3, 3e-4, 1e-4, 2e-2], dtype=torch.float64)
    a = torch.zeros(4, 8, dtype=torch.float64)
    a[:, 0] = 1.0
    b = torch.zeros_like(a)
    b[:, 0], b[:, 1] = torch.cos(angles), torch.sin(angles)
    _, st = K.slerp_rowwise(a.float(), b.float(), 0.5)
    assert st.max_angle == pytest.approx(2e-2, rel=1e-5)
    for k, ang in enumerate(angles.tolist()):
        _, st_k = K.slerp_rowwise(a[k : k + 1].float(), b[k : k + 1].float(), 0.5)
        # acos of an fp32 cosine would be off by ~30% at 1e-4; atan2 of the chord is not.
        assert st_k.max_angle == pytest.approx(ang, rel=1e-3)


def test_rowwise_keeps_norm_where_lerp_shrinks():
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[0.0, 1.0]])
    out, _ = K.slerp_rowwise(a, b, 0.5)
    assert float(out.norm()) == pytest.approx(1.0, abs=1e-6)
    assert float(K.lerp(a, b, 0.5)[0].norm()) == pytest.approx(math.sqrt(0.5), abs=1e-6)


def test_linear_weighted_mean():
    a, b = _pair((30, 30), 0.5, seed=4)
    out, _ = K.linear(a, b, 2.0, 6.0)
    torch.testing.assert_close(
        out.double(), (2 * a.double() + 6 * b.double()) / 8, rtol=1e-6, atol=1e-7
    )
    raw, _ = K.linear(a, b, 2.0, 6.0, normalize=False)
    torch.testing.assert_close(raw.double(), 2 * a.double() + 6 * b.double(), rtol=1e-6, atol=1e-6)


def test_zero_tensor_gives_finite_result():
    a = torch.zeros(10, 10)
    b = torch.randn(10, 10, generator=torch.Generator().manual_seed(0))
    for kernel in (K.slerp, K.slerp_rowwise, K.lerp):
        out, _ = kernel(a, b, 0.3)
        assert torch.isfinite(out).all()


def test_bit_identical_across_thread_counts():
    # Large enough that PyTorch would split a one-scalar reduction across threads.
    a, b = _pair((3000, 700), 0.8, seed=7, dtype=torch.bfloat16)
    before = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.append(
                [K.slerp(a, b, 0.3)[0], K.slerp_rowwise(a, b, 0.3)[0], K.tensor_cosine(a, b)[0]]
            )
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        assert torch.equal(results[0][0], other[0])
        assert torch.equal(results[0][1], other[1])
        assert results[0][2] == other[2]


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        K.lerp(torch.zeros(2, 3), torch.zeros(3, 2), 0.5)


def test_kernels_write_into_a_given_buffer_with_the_same_bits():
    from spear_mm.merge import kernels

    gen = torch.Generator().manual_seed(3)
    a = torch.randn(300, 70, generator=gen).to(torch.bfloat16)
    b = (a.float() + 0.3 * torch.randn(300, 70, generator=gen)).to(torch.bfloat16)
    for fn, kw in (
        (kernels.lerp, {}),
        (kernels.slerp, {}),
        (kernels.slerp, {"mergekit_rounding": True}),
        (kernels.slerp_rowwise, {}),
    ):
        fresh, _ = fn(a, b, 0.3, out_dtype=torch.bfloat16, **kw)
        buf = torch.full_like(a, float("nan"))
        got, _ = fn(a, b, 0.3, out_dtype=torch.bfloat16, out=buf, **kw)
        assert got.data_ptr() == buf.data_ptr() and torch.equal(got, fresh), fn.__name__
    got, _ = kernels.linear(a, b, 0.7, 0.3, out_dtype=torch.bfloat16, out=torch.empty_like(a))
    assert torch.equal(got, kernels.linear(a, b, 0.7, 0.3, out_dtype=torch.bfloat16)[0])
    with pytest.raises(ValueError, match="need"):
        kernels.lerp(a, b, 0.5, out_dtype=torch.bfloat16, out=torch.empty(3, dtype=torch.bfloat16))


def test_mergekit_rounding_decides_like_mergekit_near_the_threshold():
    # A pair whose exact cosine sits just above the threshold, where mergekit's fp32 cosine
    # (which runs ~6e-5 low on 2M elements) falls below it: mergekit takes the SLERP path.
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1024, 2048, generator=g)
    a = w.to(torch.bfloat16)
    b = (w + 0.0312 * torch.randn(1024, 2048, generator=g)).to(torch.bfloat16)
    exact = ref_slerp64(a, b, 0.3)[1]
    mk = K.mergekit_cosine(a, b)
    assert mk < K.DOT_THRESHOLD < exact
    native, st = K.slerp(a, b, 0.3, out_dtype=torch.bfloat16)
    assert st.fallback and st.cos == pytest.approx(exact, abs=1e-7)
    assert torch.equal(native, K.lerp(a, b, 0.3, out_dtype=torch.bfloat16)[0])
    ours, st_mk = K.slerp(a, b, 0.3, out_dtype=torch.bfloat16, mergekit_rounding=True)
    assert st_mk.path == "slerp" and not st_mk.fallback and st_mk.cos == mk
    coef_a, coef_b, linear = K.slerp_coefficients(mk, 0.3)
    assert not linear
    ref = (coef_a * a.float() + coef_b * b.float()).to(torch.bfloat16)
    assert torch.equal(ours, ref)  # mergekit's order of operations, bit for bit
    # Far from the threshold the accurate cosine decides alone (mergekit's is not computed).
    far, st_far = K.slerp(a, a, 0.3, out_dtype=torch.bfloat16, mergekit_rounding=True)
    assert st_far.fallback and st_far.cos == pytest.approx(1.0) and torch.equal(far, a)


def _block_sums_reference(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """(‖a‖², ‖b‖², ‖a − b‖²) as the kernels define them, one whole BLOCK at a time: fp32 norms
    of rows of ROW elements (a shorter tail as one row), squared and summed in fp64 per block,
    blocks added in order."""
    acc = [0.0, 0.0, 0.0]
    fa, fb = a.reshape(-1).float(), b.reshape(-1).float()
    for lo in range(0, fa.numel(), K.BLOCK):
        x, y = fa[lo : lo + K.BLOCK], fb[lo : lo + K.BLOCK]
        s = torch.stack([x, y, x - y])
        full = s.shape[1] // K.ROW * K.ROW
        rows = [torch.linalg.vector_norm(s[:, :full].reshape(3, -1, K.ROW), dim=2)]
        if full < s.shape[1]:
            rows.append(torch.linalg.vector_norm(s[:, full:], dim=1, keepdim=True))
        for i, part in enumerate(torch.cat(rows, dim=1).double().square().sum(dim=1).tolist()):
            acc[i] += part
    return acc


@pytest.mark.parametrize("sub", [1024, 3 * 1024, 1 << 17, 1 << 20])
def test_sub_blocks_change_no_bit(monkeypatch, sub):
    """Converting and combining in SUB-element pieces of a block gives the same output, the same
    sums (against a one-shot per-block reference) and the same mergekit cosine for any SUB."""
    a, b = _pair((2 * K.BLOCK + 5 * K.ROW + 77,), 0.05, seed=3, dtype=torch.bfloat16)
    ca, cb = torch.tensor(0.7), torch.tensor(0.3)
    want = (a.float() * ca + b.float() * cb).to(torch.bfloat16)
    monkeypatch.setattr(K, "SUB", sub)
    out, acc = torch.empty_like(a), [0.0, 0.0, 0.0]
    K.combine_span(a, b, out, ca, cb, torch.float32, acc)
    assert torch.equal(out.view(torch.int16), want.view(torch.int16))
    assert acc == _block_sums_reference(a, b)
    sums = [0.0, 0.0, 0.0]
    K.sums_span(a, b, torch.float32, sums)
    assert sums == acc
    x, y = a.float(), b.float()  # mergekit: normalise by the norm of chunk norms, one-shot sum
    na = torch.linalg.vector_norm(torch.stack([x[i : i + (1 << 20)].norm() for i in (0, 1 << 20)]))
    nb = torch.linalg.vector_norm(torch.stack([y[i : i + (1 << 20)].norm() for i in (0, 1 << 20)]))
    parts = [
        ((x[i : i + (1 << 20)] / na) * (y[i : i + (1 << 20)] / nb)).sum() for i in (0, 1 << 20)
    ]
    assert K.mergekit_cosine(a, b) == float(torch.stack(parts).sum().clamp(-1, 1))
