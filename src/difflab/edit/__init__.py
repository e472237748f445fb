"""Editing and inverse problems on a trained pipeline: measurement operators, restoration
(DDNM, DPS) and SDEdit."""
