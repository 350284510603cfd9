"""The study's gate: is this a regime where a merge verdict can say anything about layers?

Two checks on the report's test-role rows (docs/metrics.md, "The gate"):

1. **Forgetting is real**: plain CPT's general forgetting (adapted − base general bits per byte)
   is at least `FORGETTING_MULTIPLE` times the half-width of its own 95% interval — forgetting
   far outside the probe's noise, not a difference that merely excludes zero.
2. **Not a denoising regime**: the uniform baseline's domain gain kept is ≤ 100% within its
   interval (its lower end is at most 100%). A uniform move toward the base that keeps *more*
   than all of the domain gain means the adapted checkpoint is noisy and averaging with the base
   helps on both axes — then uniform wins for reasons unrelated to where forgetting sits.

When either check fails the report says so, and that the merge verdicts say nothing about layer
localisation. Pure functions of the rows: tested on constructed numbers.
"""

from __future__ import annotations

FORGETTING_MULTIPLE = 5.0  # forgetting ≥ 5 × the half-width of its 95% interval


def _forgetting(adapted: dict | None) -> dict | None:
    """{value, lo, hi} of adapted − base general bpb (the forgetting-recovered denominator)."""
    entry = ((adapted or {}).get("ci") or {}).get("forgetting_recovered") or {}
    return entry.get("denominator")


def study_gate(adapted: dict | None, uniform: dict | None) -> dict:
    """{passed, checks: [{name, passed, text}], regime}: `passed` None when a check lacks data."""
    checks = []
    den = _forgetting(adapted)
    if den and den.get("lo") is not None and den.get("hi") is not None:
        half = (den["hi"] - den["lo"]) / 2
        ok = den["value"] > 0 and den["value"] >= FORGETTING_MULTIPLE * half
        mult = den["value"] / half if half > 0 else float("inf")
        change = f"{den['value']:+.4f} bpb [{den['lo']:+.4f}, {den['hi']:+.4f}]"
        text = (
            f"plain CPT's general forgetting {change} is {mult:.1f}× its interval's half-width "
            f"({'≥' if ok else '<'} {FORGETTING_MULTIPLE:g}× required)"
            if den["value"] > 0
            else f"plain CPT's general bits per byte moved {change}: no forgetting"
        )
        checks.append({"name": "forgetting_is_real", "passed": ok, "text": text})
    else:
        checks.append({"name": "forgetting_is_real", "passed": None, "text": "no interval"})
    gain = ((uniform or {}).get("ci") or {}).get("gain_kept") or {}
    if uniform is None:
        checks.append(
            {"name": "not_denoising", "passed": None, "text": "no uniform row in the table"}
        )
    elif not gain.get("measurable"):
        checks.append(
            {
                "name": "not_denoising",
                "passed": None,
                "text": "the uniform row's domain gain kept is not measurable",
            }
        )
    else:
        iv = gain["interval"]
        ok = iv["lo"] is not None and iv["lo"] <= 1.0
        checks.append(
            {
                "name": "not_denoising",
                "passed": ok,
                "text": (
                    f"the uniform row keeps {100 * iv['value']:.1f}% "
                    f"[{100 * iv['lo']:.1f}, {100 * iv['hi']:.1f}] of the domain gain "
                    f"({'consistent with' if ok else 'above'} ≤ 100%)"
                ),
            }
        )
    states = [c["passed"] for c in checks]
    passed = False if False in states else (None if None in states else True)
    if checks[0]["passed"] is False:
        regime = "forgetting not clear"
    elif checks[1]["passed"] is False:
        regime = "denoising"
    else:
        regime = {True: "forgetting", None: "undecided"}[passed]
    return {"passed": passed, "checks": checks, "regime": regime}


def gate_finding(gate: dict) -> str:
    """The report's sentence for the gate."""
    detail = "; ".join(c["text"] for c in gate["checks"])
    if gate["passed"]:
        return (
            f"Gate passed (test-role text): {detail}. Forgetting is real and uniform "
            "interpolation is not simply denoising the CPT, so the merge verdicts below can "
            "speak to where forgetting sits."
        )
    if gate["passed"] is None:
        return (
            f"Gate undecided (test-role text): {detail}. The merge verdicts below may not say "
            "anything about layer localisation."
        )
    why = {
        "denoising": "this study is in a denoising regime (averaging with the base improves "
        "the domain too)",
        "forgetting not clear": "plain CPT's forgetting is too small against the probe's noise",
    }[gate["regime"]]
    return (
        f"Gate failed (test-role text): {detail}. So {why}: the merge verdicts below say "
        "nothing about layer localisation."
    )
