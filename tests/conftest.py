"""Shared test setup."""

import os
from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tests run tiny models, where intra-op threads only add overhead (and spin-wait on a
    shared 2-core CPU: up to 17x slower measured); subprocess tests set their own threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class HashText:
    """A stand-in text encoder: fixed pseudo-random states per prompt (dim 32, 4 tokens)."""

    def encode(self, prompts):
        from difflab.text.base import TextEncoding

        rows = [torch.Generator().manual_seed(sum(map(ord, p))) for p in prompts]
        tokens = torch.stack([torch.randn(4, 32, generator=g) for g in rows])
        return TextEncoding(tokens, torch.ones(len(prompts), 4, dtype=torch.bool),
                            tokens.mean(1))


@pytest.fixture
def tiny_pipeline():
    """A real `difflab.runtime.Pipeline`: a 16x16 UNet with seeded random weights, rectified
    flow and the stand-in text encoder (dim 32)."""
    from difflab.core.processes import FlowProcess
    from difflab.models import build_model
    from difflab.runtime import Pipeline
    from difflab.runtime.conditioning import TextConditioner

    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = build_model("unet-tiny", input_size=16, base_channels=16, channel_mult=(1, 2, 2),
                          attention_levels=(1,), norm_groups=8, context_dim=32).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a fresh model outputs zero; perturb every weight
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return Pipeline(net, FlowProcess(), TextConditioner(HashText()), (3, 16, 16))


# Tests check the numerics of the real int8 kernels, not their speed: run them on every CPU
# (outside tests, `real` execution is refused where the kernels are slow).
os.environ.setdefault("DIFFLAB_ALLOW_SLOW_INT8", "1")
