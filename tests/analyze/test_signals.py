"""Signal kernels against hand-computed values and independent float64 formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spear_mm.analyze import signals as sg


def _with_spectrum(s: list[float], n: int, m: int, seed: int = 0) -> torch.Tensor:
    """An n×m matrix with singular values ``s`` (random orthogonal factors)."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.float64))
    k = len(s)
    return (u[:, :k] @ torch.diag(torch.tensor(s, dtype=torch.float64)) @ v[:, :k].T).float()


def test_rel_drift_and_cosine_by_hand():
    w = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
    wa = torch.tensor([[3.0, 1.0], [0.0, 4.0]])
    assert sg.rel_drift(w, wa) == pytest.approx(1.0 / 5.0)
    # <W, W'> = 9 + 16 = 25; |W| = 5; |W'| = sqrt(26)
    assert sg.cosine(w, wa) == pytest.approx(25.0 / (5.0 * math.sqrt(26.0)))


def test_spectrum_snr_matches_independent_formula():
    s = [10.0, 4.0, 3.0, 2.0, 1.5, 1.0, 0.5, 0.25]
    w = _with_spectrum(s, 8, 16)
    got = sg.spectrum_snr(torch.linalg.svdvals(w), 8, 16)
    arr = np.array(s)
    sigma = (np.percentile(arr, 75) - np.percentile(arr, 25)) / 1.349
    edge = sigma * (1 + math.sqrt(8 / 16))
    expect = arr[arr > edge].sum() / arr[arr <= edge].sum() / arr[0]
    assert got.edge == pytest.approx(edge, rel=1e-5)
    assert got.n_signal == int((arr > edge).sum())
    assert got.snr == pytest.approx(expect, rel=1e-5)


def test_svdr_and_top_drift_by_hand():
    assert sg.svdr(torch.tensor([4.0, 2.0, 1.0]), torch.tensor([3.0, 2.5, 1.0]), 2) == (
        pytest.approx(1.0 / 6.0)
    )
    assert sg.svdr(torch.tensor([4.0, 2.0]), torch.tensor([5.0, 3.0]), 2) == 0.0  # growth
    w = torch.diag(torch.tensor([5.0, 2.0, 1.0]))
    delta = torch.zeros(3, 3)
    delta[0, 0] = 0.5  # change only along the top singular pair
    u, s, vh = torch.linalg.svd(w)
    assert sg.top_drift(delta, u, s, vh.T, 1) == pytest.approx(0.5 / 5.0)
    delta2 = torch.zeros(3, 3)
    delta2[2, 2] = 0.5  # change only along the smallest direction: invisible at k=1
    assert sg.top_drift(delta2, u, s, vh.T, 1) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("shape", [(6, 10), (40, 6)])  # wide (direct) and tall (Gram) paths
def test_out_drift_matches_numpy(shape):
    g = torch.Generator().manual_seed(3)
    w = torch.randn(shape, generator=g)
    wa = w + 0.1 * torch.randn(shape, generator=g)
    wn, dn = w.double().numpy(), (wa - w).double().numpy()
    expect = np.linalg.norm(dn @ wn.T) / np.linalg.norm(wn @ wn.T)
    assert sg.out_drift(w, wa) == pytest.approx(expect, rel=1e-4)


def test_identical_and_zero_tensors_give_zero_change():
    w = torch.randn(12, 7, generator=torch.Generator().manual_seed(0))
    same = sg.matrix_signals(w, w.clone())
    for key in ("rel_drift", "svdr", "top_drift", "out_drift", "delta_sq"):
        assert same[key] == 0.0
    assert same["cosine"] == pytest.approx(1.0)
    assert same["snr_base"] == pytest.approx(same["snr_adapted"])
    zero = sg.matrix_signals(torch.zeros(5, 4), torch.zeros(5, 4))
    assert all(math.isfinite(v) for v in zero.values())
    assert zero["rel_drift"] == 0.0 and zero["cosine"] == 1.0 and zero["snr_base"] == 0.0
    grown = sg.matrix_signals(torch.zeros(5, 4), torch.ones(5, 4))  # zero base, real change
    assert all(math.isfinite(v) for v in grown.values()) and grown["rel_drift"] > 0


def test_vector_signals_by_hand():
    out = sg.tensor_signals(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 2.0]))
    assert "snr_base" not in out  # no SVD for 1-D tensors
    assert out["rel_drift"] == pytest.approx(1.0 / math.sqrt(5.0))
    assert out["mean_abs_log_gain"] == pytest.approx(math.log(2.0) / 2.0)
    same = sg.tensor_signals(torch.ones(4), torch.ones(4))
    assert same["rel_drift"] == 0.0 and same["mean_abs_log_gain"] == 0.0
    zeros = sg.tensor_signals(torch.zeros(3), torch.zeros(3))
    assert zeros["rel_drift"] == 0.0 and zeros["cosine"] == 1.0


def test_fast_mode_close_to_exact():
    g = torch.Generator().manual_seed(5)
    w = _with_spectrum([20, 12, 8, 5, 3] + [1.0] * 59, 64, 96) + 0.01 * torch.randn(
        64, 96, generator=g
    )
    wa = w + 0.05 * torch.randn(64, 96, generator=g)
    ex, fa = sg.matrix_signals(w, wa, mode="exact"), sg.matrix_signals(w, wa, mode="fast")
    for key in ("snr_base", "svdr", "top_drift", "out_drift", "rel_drift"):
        assert fa[key] == pytest.approx(ex[key], rel=2e-2, abs=1e-6), key
    # deterministic: bit-identical across calls
    assert sg.matrix_signals(w, wa, mode="fast") == fa
