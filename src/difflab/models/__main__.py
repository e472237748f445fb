"""`python -m difflab.models`: print the presets table (parameters, analytic GFLOP/image)."""

from difflab.models import presets_table

print(presets_table())
