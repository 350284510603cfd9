"""Trade-off sweeps: knob → recipe families, in-memory evaluation, Pareto frontier, target solver.

`schedule` (knob → per-layer restore, pure) → `recipes` (native merge recipes) → `evaluate`
(in-memory merge + probes) → `solver` / `frontier` (pure) → `finish` (files, `run_sweep`).
See docs/sweeps.md. The pure parts are re-exported here; `run_sweep` lives in
`spear_mm.sweep.finish` (it imports torch and the merge package).
"""

from spear_mm.sweep.frontier import compare_families, pareto_front
from spear_mm.sweep.schedule import FAMILIES, Schedule, make_schedule
from spear_mm.sweep.solver import Solution, solve

__all__ = [
    "FAMILIES",
    "Schedule",
    "Solution",
    "compare_families",
    "make_schedule",
    "pareto_front",
    "solve",
]
