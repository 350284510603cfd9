"""Per-tensor records → per-layer features and a layers × kinds table (pure).

Layer features (all "larger = more change"; see docs/analyzer.md for the reasoning):

- ``rel_drift``     norm-weighted relative drift of the layer's matrices, √ΣΔ² / √ΣW²
- ``norm_drift``    the same over the layer's norm gains (biases are not norms: left out)
- ``one_minus_cos`` mean (1 − cosine) over matrices
- ``swci``          mean SNR-weighted change intensity: rel_drift × SNR_base / mean SNR_base of
                    the same kind across the model (Spectrum ranks SNR within a module type)
- ``svdr``          mean singular-value drop ratio
- ``snr_drop``      mean (SNR_base − SNR_adapted)
- ``top_drift``     mean change along the base's top singular directions
- ``out_drift``     mean activation-free output-change proxy
- ``<signal>:<kind>`` the per-kind values of rel_drift / top_drift / out_drift / swci (weights);
                    a bias has its own ``rel_drift:<kind>.bias`` (Qwen2's q/k/v biases), so it
                    never overwrites its weight's value
- ``depth``         L − 1 − layer: the depth baseline (earliest layers first), no weights needed
"""

from __future__ import annotations

import math
from collections import defaultdict

from spear_mm.analyze.stream import TensorRecord
from spear_mm.io.archmap import KIND_GROUP, classify

MATRIX_KINDS = tuple(k for k, g in KIND_GROUP.items() if g in ("attention", "mlp"))
NORM_KINDS = tuple(k for k, g in KIND_GROUP.items() if g == "norm" and k != "norm_final")
PER_KIND_SIGNALS = ("rel_drift", "top_drift", "out_drift", "swci")
# The layer features a combined score may use (per-kind ones are added by name).
MEAN_SIGNALS = ("swci", "svdr", "top_drift", "out_drift")


def add_swci(records: list[TensorRecord]) -> None:
    """Add ``swci`` to every matrix record in place: rel_drift × SNR_base / kind-mean SNR_base.

    Normalising SNR within a kind makes kinds of different shapes comparable; a kind whose SNRs
    are all zero gets weight 1 (plain drift).
    """
    by_kind: dict[str, list[float]] = defaultdict(list)
    for r in records:
        if "snr_base" in r.signals:
            by_kind[r.kind].append(r.signals["snr_base"])
    mean = {k: sum(v) / len(v) for k, v in by_kind.items()}
    for r in records:
        if "snr_base" in r.signals:
            m = mean[r.kind]
            weight = r.signals["snr_base"] / m if m > 0 else 1.0
            r.signals["swci"] = r.signals["rel_drift"] * weight


def _pooled_drift(recs: list[TensorRecord]) -> float:
    base = sum(r.signals["base_sq"] for r in recs)
    delta = sum(r.signals["delta_sq"] for r in recs)
    if delta == 0.0:
        return 0.0
    return math.sqrt(delta) / math.sqrt(max(base, 1e-24))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def layer_features(records: list[TensorRecord], n_layers: int) -> list[dict[str, float]]:
    """One feature dict per layer index 0..n_layers-1 (call ``add_swci`` first)."""
    per_layer: list[list[TensorRecord]] = [[] for _ in range(n_layers)]
    for r in records:
        if r.layer is not None and 0 <= r.layer < n_layers:
            per_layer[r.layer].append(r)
    out = []
    for i, recs in enumerate(per_layer):
        mats = [r for r in recs if "snr_base" in r.signals]
        vecs = [r for r in recs if "snr_base" not in r.signals]
        biases = [r for r in vecs if _is_bias(r)]
        norms = [r for r in vecs if not _is_bias(r)]
        f = {
            "depth": float(n_layers - 1 - i),
            "rel_drift": _pooled_drift(mats),
            "norm_drift": _pooled_drift(norms),
            "one_minus_cos": _mean([1.0 - r.signals["cosine"] for r in mats]),
            "snr_drop": _mean([r.signals["snr_base"] - r.signals["snr_adapted"] for r in mats]),
        }
        for s in MEAN_SIGNALS:
            f[s] = _mean([r.signals.get(s, 0.0) for r in mats])
        for r in mats:
            for s in PER_KIND_SIGNALS:
                f[f"{s}:{r.kind}"] = r.signals.get(s, 0.0)
        for r in norms:
            f[f"rel_drift:{r.kind}"] = r.signals["rel_drift"]
        for r in biases:
            f[f"rel_drift:{r.kind}.bias"] = r.signals["rel_drift"]
        out.append(f)
    return out


def kind_table(
    records: list[TensorRecord], n_layers: int, signal: str = "rel_drift"
) -> tuple[list[str], list[list[float | None]]]:
    """Layers × kinds table of one per-tensor signal (None where a layer lacks the kind)."""
    kinds = [k for k in MATRIX_KINDS + NORM_KINDS if any(r.kind == k for r in records)]
    table: list[list[float | None]] = [[None] * len(kinds) for _ in range(n_layers)]
    for r in records:
        if r.layer is not None and r.kind in kinds and signal in r.signals and not _is_bias(r):
            table[r.layer][kinds.index(r.kind)] = r.signals[signal]
    return kinds, table


def _is_bias(record: TensorRecord) -> bool:
    return classify(record.name).param == "bias"
