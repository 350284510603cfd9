"""`task_arithmetic`: base + λ·Δ (Ilharco et al. 2023). With one adapted model this is LERP up to
rounding; it is here for mergekit recipes and as the untrimmed member of the task-vector family."""

from spear_mm.merge.methods.task_vector import task_vector_method

TASK_ARITHMETIC = task_vector_method(
    "task_arithmetic",
    "base + λ·Δ, Δ = adapted − base",
    None,
    (),
    consensus=False,
    normalize=False,
    reference="https://arxiv.org/abs/2212.04089",
)
