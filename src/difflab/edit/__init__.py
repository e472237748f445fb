"""Editing, inversion and inverse problems on any pipeline (docs/editing.md).

`editing`: SDEdit, Prompt-to-Prompt, DiffEdit, masked and regional edits (`run_edit`);
`inversion`: DDIM, null-text and negative-prompt inversion; `p2p`: cross-attention control;
`operators`: linear measurement operators; `restore`: DDNM, DPS, RePaint and classical
baselines; `suite`: the `edit` suite and its exact scoring; `commands`: `difflab edit` and
`difflab restore`.
"""
