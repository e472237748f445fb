"""Adapters and personalisation: tune a trained base on a few images of a new concept.

`difflab.tune.fit.tune` trains one method (LoRA, DoRA, LoHa, LoKr through peft; full
fine-tuning, DreamBooth, Custom Diffusion, DiffFit, SaRA, Textual Inversion natively);
`difflab.tune.adapters` writes, loads, composes and merges the resulting adapter folders.
"""
