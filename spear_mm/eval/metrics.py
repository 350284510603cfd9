"""Retention, domain gain kept and forgetting recovered: pure, scale-free ratios of scores.

All functions take plain floats (one task) or mappings task -> float (several tasks) and return
floats. A ratio that cannot be defined — no gain to keep, no forgetting to recover, a zero or
negative score, a non-finite input — is returned as `Undefined`: a float NaN that carries a
`.reason`, so it propagates through arithmetic, fails every comparison, and can still be explained
in a report. Nothing here divides by zero or raises on degenerate numbers.

Direction: `higher_is_better=True` for accuracies, `False` for bits-per-byte or perplexity.
`gain_kept` and `forgetting_recovered` are ratios of differences, so they read the same in both
directions; the direction is only needed to tell "no gain" from "a loss" (see each function).
See docs/metrics.md for the definitions and worked examples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypedDict, Unpack

Scores = Mapping[str, float]  # task → score
Direction = bool | Mapping[str, bool]  # higher_is_better, for all tasks or per task


class Undefined(float):
    """NaN with a reason: the result of a ratio that has no meaning for these scores."""

    reason: str

    def __new__(cls, reason: str) -> Undefined:  # noqa: PYI034 (py3.10 has no Self)
        obj = super().__new__(cls, math.nan)
        obj.reason = reason
        return obj

    def __repr__(self) -> str:
        return f"Undefined({self.reason!r})"

    def __reduce__(self):  # keep the reason through pickling / deepcopy
        return (Undefined, (self.reason,))


def is_defined(value: float) -> bool:
    """True for a finite float, False for `Undefined`, NaN or infinities."""
    return not isinstance(value, Undefined) and math.isfinite(value)


def _bad_input(**scores: float) -> Undefined | None:
    for name, value in scores.items():
        if value is None or not math.isfinite(float(value)):
            return Undefined(f"{name} score is {value!r}, not a finite number")
    return None


def normalized(score: float, base_score: float, higher_is_better: bool) -> float:
    """Score relative to the base, oriented so that higher is better and the base reads 1.0.

    `score / base` when higher is better, `base / score` when lower is better. Undefined when a
    denominator is zero or a score is negative (ratios of signed scores have no meaning).
    """
    bad = _bad_input(model=score, base=base_score)
    if bad is not None:
        return bad
    if score < 0 or base_score < 0:
        return Undefined(f"negative score (model {score}, base {base_score}); ratios need >= 0")
    num, den = (score, base_score) if higher_is_better else (base_score, score)
    if den == 0:
        who = "base" if higher_is_better else "model"
        return Undefined(f"{who} score is 0, the ratio has no denominator")
    return num / den


def retention(model_score: float, base_score: float, higher_is_better: bool) -> float:
    """General retention of one task: model / base (higher is better) or base / model (lower).

    1.0 means the model scores like the base; below 1 it lost ability; above 1 it gained (an
    Instruct base scored on plain text can be beaten — report it as is).
    """
    return normalized(model_score, base_score, higher_is_better)


class RatioOptions(TypedDict, total=False):
    """Keyword options of `gain_kept` and `forgetting_recovered`.

    higher_is_better: the task's direction (None: no direction check);
    min_delta: the adapted-vs-base difference at or below which the ratio is Undefined.
    """

    higher_is_better: bool | None
    min_delta: float


def _difference_ratio(
    num: float,
    den: float,
    what: str,
    better_sign: float,
    *,
    higher_is_better: bool | None = None,
    min_delta: float = 0.0,
) -> float:
    """`num / den` unless |den| <= min_delta or — with a direction — den points the wrong way
    (`better_sign` is the sign den must have when higher is better)."""
    if abs(den) <= min_delta:
        return Undefined(f"no {what} (|difference| {abs(den):.3g} <= min_delta {min_delta:.3g})")
    den_sign = (
        0.0 if higher_is_better is None else (better_sign if higher_is_better else -better_sign)
    )
    if den_sign and den * den_sign <= 0:
        return Undefined(f"no {what}: the adapted model moved the other way ({den:+.4g})")
    return num / den


def gain_kept(model: float, base: float, adapted: float, **options: Unpack[RatioOptions]) -> float:
    """Domain gain kept: (model - base) / (adapted - base), on one domain task.

    1.0 keeps all of the adapted model's gain, 0.0 none of it; values above 1 or below 0 are
    possible and returned as is. Undefined when adapted and base differ by at most `min_delta`
    (no gain), and — when `higher_is_better` is given — when the adapted model is *worse* than the
    base on this task (there is no gain to keep, only a loss).
    """
    bad = _bad_input(model=model, base=base, adapted=adapted)
    if bad is not None:
        return bad
    return _difference_ratio(model - base, adapted - base, "domain gain", 1.0, **options)


def forgetting_recovered(
    model: float, base: float, adapted: float, **options: Unpack[RatioOptions]
) -> float:
    """Forgetting recovered: (adapted - model) / (adapted - base), on one general task.

    1.0 means the model is back at the base's score, 0.0 that it forgot as much as the adapted
    model. Undefined when adapted and base differ by at most `min_delta` (no forgetting), and —
    when `higher_is_better` is given — when the adapted model is *better* than the base.
    """
    bad = _bad_input(model=model, base=base, adapted=adapted)
    if bad is not None:
        return bad
    # Forgetting is a move against the "better" direction: adapted - base < 0 for accuracies.
    return _difference_ratio(adapted - model, adapted - base, "forgetting", -1.0, **options)


@dataclass(frozen=True)
class Average:
    """A mean over tasks with the tasks it could not use and why.

    `value` is the mean over the defined per-task values (Undefined if none is defined);
    `per_task` holds every task's value, defined or not; `undefined` maps the skipped tasks to
    their reasons. Callers that need all tasks defined check `not undefined`.
    """

    value: float
    per_task: dict[str, float] = field(default_factory=dict)
    undefined: dict[str, str] = field(default_factory=dict)


def average(per_task: Mapping[str, float]) -> Average:
    """Mean of the defined values of `per_task`; the rest are listed with their reasons."""
    good = {k: v for k, v in per_task.items() if is_defined(v)}
    bad = {
        k: getattr(v, "reason", f"value {v!r} is not finite")
        for k, v in per_task.items()
        if k not in good
    }
    if not good:
        value: float = Undefined("no task has a defined value" if per_task else "no tasks")
    else:
        value = math.fsum(good.values()) / len(good)
    return Average(value=value, per_task=dict(per_task), undefined=bad)


def _direction(higher_is_better: bool | Mapping[str, bool], task: str) -> bool:
    if isinstance(higher_is_better, Mapping):
        return bool(higher_is_better[task])
    return bool(higher_is_better)


def _common_tasks(*maps: Mapping[str, float]) -> list[str]:
    # Keep the first mapping's order so reports list tasks as the caller gave them.
    return [t for t in maps[0] if all(t in m for m in maps[1:])]


def mean_retention(
    model: Mapping[str, float],
    base: Mapping[str, float],
    higher_is_better: bool | Mapping[str, bool],
) -> Average:
    """Average general retention over the tasks present in both mappings."""
    per = {
        t: retention(model[t], base[t], _direction(higher_is_better, t))
        for t in _common_tasks(model, base)
    }
    return average(per)


def _mean_of(fn, model, base, adapted, higher_is_better, min_delta: float) -> Average:
    per = {
        t: fn(
            model[t],
            base[t],
            adapted[t],
            higher_is_better=_direction(higher_is_better, t),
            min_delta=min_delta,
        )
        for t in _common_tasks(model, base, adapted)
    }
    return average(per)


def mean_gain_kept(
    model: Scores, base: Scores, adapted: Scores, higher_is_better: Direction, *, min_delta=0.0
) -> Average:
    """Average of per-task `gain_kept` over the tasks present in all three mappings."""
    return _mean_of(gain_kept, model, base, adapted, higher_is_better, min_delta)


def mean_forgetting_recovered(
    model: Scores, base: Scores, adapted: Scores, higher_is_better: Direction, *, min_delta=0.0
) -> Average:
    """Average of per-task `forgetting_recovered` over the tasks present in all three mappings."""
    return _mean_of(forgetting_recovered, model, base, adapted, higher_is_better, min_delta)


def _pooled(
    model: Mapping[str, float],
    base: Mapping[str, float],
    adapted: Mapping[str, float],
    higher_is_better: bool | Mapping[str, bool],
) -> tuple[float, float]:
    """Mean base-normalized scores of model and adapted over the tasks all three share."""
    tasks = _common_tasks(model, base, adapted)
    pick = lambda m: {t: m[t] for t in tasks}
    return (
        mean_retention(pick(model), base, higher_is_better).value,
        mean_retention(pick(adapted), base, higher_is_better).value,
    )


def pooled_forgetting_recovered(
    model: Scores, base: Scores, adapted: Scores, higher_is_better: Direction, *, min_delta=0.0
) -> float:
    """Forgetting recovered on the *mean retention*: (R_model - R_adapted) / (1 - R_adapted).

    This is how a paper's headline numbers combine (69.7% -> 91.2% retention is 71% of the
    forgetting recovered). Unlike the mean of per-task ratios it does not explode when one task
    barely forgot. Undefined when either mean retention is undefined or the adapted model's mean
    retention is within `min_delta` of 1 or above it (no forgetting on average).
    """
    r_model, r_adapted = _pooled(model, base, adapted, higher_is_better)
    return forgetting_recovered(r_model, 1.0, r_adapted, higher_is_better=True, min_delta=min_delta)


def pooled_gain_kept(
    model: Scores, base: Scores, adapted: Scores, higher_is_better: Direction, *, min_delta=0.0
) -> float:
    """Gain kept on the mean base-normalized score: (N_model - 1) / (N_adapted - 1).

    N is `normalized` (score relative to the base, higher is better, base = 1) averaged over
    tasks. Undefined when the adapted model's mean is within `min_delta` of 1 or below it.
    """
    n_model, n_adapted = _pooled(model, base, adapted, higher_is_better)
    return gain_kept(n_model, 1.0, n_adapted, higher_is_better=True, min_delta=min_delta)
