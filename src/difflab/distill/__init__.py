"""Few-step students distilled from a teacher: Reflow, progressive and consistency (LCM-style)
distillation, each written as a "student" artefact that `difflab.runtime.load` reads.

`objectives` holds the math (targets and losses, checked on the analytic Gaussian), `fit` the
phases and budget of a run, `checkpoint` its resume state, `student` the artefact kind.
"""
