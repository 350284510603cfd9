"""What every loaded recipe is, whatever its format: `Recipe` (model references, dtypes, `plan`),
where its models live, and how a pydantic error becomes one line naming the file and the key.

Both format readers (`merge.native`, `merge.mergekit_compat`) build on this module; the front door
`merge.recipe.load_recipe` picks the reader, so neither format imports the other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pydantic import ValidationError

from spear_mm.errors import UserError
from spear_mm.merge.methods.base import Param
from spear_mm.merge.plan import TensorPlan


@dataclass
class Recipe:
    """A loaded recipe: model references, dtypes and a `plan` from tensor names to TensorPlans.

    `compute_dtype` / `round_to_compute` reproduce mergekit's `dtype` key (inputs cast to it, the
    result rounded to it before `out_dtype`); native recipes compute in fp32 from the inputs as
    stored and round once, to `out_dtype` (default: each adapted tensor's dtype).
    """

    base: str
    adapted: str
    source: Path | None = None
    format: str = "native"
    out_dtype: torch.dtype | None = None
    compute_dtype: torch.dtype | None = None
    round_to_compute: bool = False
    allow_extrapolation: bool = False
    unmatched: list[str] = field(default_factory=list)
    # Tensors of kind `other` when some rule selects by `kinds:`: no such rule can see them.
    unclassified: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"recipe {self.source}" if self.source else "recipe"

    def plan(self, names: list[str], num_layers: int) -> dict[str, TensorPlan]:
        raise NotImplementedError

    def model_folders(self) -> tuple[Path, Path]:
        """(base, adapted) local folders; relative paths are tried from the current folder,
        then from the recipe's folder."""
        return _resolve(self.base, self.source), _resolve(self.adapted, self.source)


def _resolve(spec: str, source: Path | None) -> Path:
    from spear_mm.io.sources import resolve_model

    path = Path(os.path.expanduser(spec))
    if not path.is_absolute() and not path.is_dir() and source is not None:
        beside = source.parent / path
        if beside.is_dir():
            return beside
    return resolve_model(spec)


def validation_message(exc: ValidationError, where: str) -> str:
    """One line from pydantic's errors: the key path, the problem, what is allowed."""
    errors = exc.errors()
    err = errors[0]
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required key is missing"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{where}: key '{loc or '<top>'}': {msg}{more}"


def check_range(param: Param, value, key: str, where: str, allow_extrapolation: bool) -> None:
    """UserError naming the file and the key when `value` (a number, or a list of gradient
    anchors) is outside `param`'s meaningful range (see `methods.base.Param.check`)."""
    for v in value if isinstance(value, list) else [value]:
        problem = param.check(v, allow_extrapolation)
        if problem:
            raise UserError(f"{where}: key '{key}': {problem}")
