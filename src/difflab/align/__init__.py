"""Alignment: rewards from the shapes evaluator, a learned differentiable reward, inference-time
search (best-of-N, SMC steering) and preference tuning (Diffusion-DPO) on LoRA adapters."""
