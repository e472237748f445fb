"""Inference without the trainer: artefacts, loading, the pipeline, and the machine's choices
(precision, kernels, threads)."""
