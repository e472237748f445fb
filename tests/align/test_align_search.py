"""Inference-time search: SMC with a constant potential is plain sampling, best-of-N keeps the
maximum, runs repeat per seed, and bad search specs are one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from difflab.align.search import (
    BestOfConfig,
    SMCConfig,
    candidate_seeds,
    parse_search,
    search,
    search_bestof,
    search_smc,
    systematic_resample,
)
from difflab.config import ConfigError
from difflab.data.grid import to_uint8
from difflab.data.world import ObjectSpec, PromptSpec
from difflab.runtime import SampleConfig

SPEC = PromptSpec("a red circle", "single", (ObjectSpec("circle", "red"),))
CONFIG = SampleConfig(sampler="euler_ancestral", steps=4, cfg=2.0)


def constant(images, spec):
    return np.full(len(images), 0.5)


def brightness(images, spec):
    return images.float().mean(dim=(1, 2, 3)).numpy()


def test_smc_with_a_constant_potential_is_plain_sampling(tiny_pipeline):
    pipe = tiny_pipeline
    out, = search_smc(pipe, [SPEC.text], [SPEC], [7], CONFIG, SMCConfig(particles=3), constant)
    plain = pipe.sample([SPEC.text] * 3, candidate_seeds(7, 3), CONFIG)
    assert out.resamples == 0
    np.testing.assert_array_equal(out.image, to_uint8(plain[0])[0])  # candidate 0: seed 7
    alone = pipe.sample([SPEC.text], [7], CONFIG)
    assert torch.allclose(plain[0], alone[0], atol=1e-5)  # and it is the plain sample of seed 7


def test_smc_resamples_towards_the_potential_and_repeats_per_seed(tiny_pipeline):
    opts = SMCConfig(particles=4, lam=50.0)
    a, = search_smc(tiny_pipeline, [SPEC.text], [SPEC], [3], CONFIG, opts, brightness)
    b, = search_smc(tiny_pipeline, [SPEC.text], [SPEC], [3], CONFIG, opts, brightness)
    assert a.resamples > 0
    np.testing.assert_array_equal(a.image, b.image)
    assert a.rewards == b.rewards and a.nfe == 4 * CONFIG.nfe
    assert a.reward == max(a.rewards)


def test_bestof_picks_the_maximum(tiny_pipeline):
    out, = search_bestof(tiny_pipeline, [SPEC.text], [SPEC], [5], CONFIG, BestOfConfig(n=4),
                         brightness)
    plain = tiny_pipeline.sample([SPEC.text] * 4, candidate_seeds(5, 4), CONFIG)
    r = brightness(plain, SPEC)
    assert out.rewards == pytest.approx(r.tolist())
    np.testing.assert_array_equal(out.image, to_uint8(plain[int(np.argmax(r))])[0])
    assert out.reward == pytest.approx(float(r.max()))


def test_systematic_resampling_keeps_uniform_weights_and_drops_zero_weights():
    g = torch.Generator().manual_seed(0)
    assert systematic_resample(torch.full((8,), 1 / 8), g).tolist() == list(range(8))
    idx = systematic_resample(torch.tensor([0.0, 0.5, 0.0, 0.5]), g)
    assert sorted(idx.tolist()) == [1, 1, 3, 3]


def test_a_prompt_searched_in_a_batch_matches_it_searched_alone(tiny_pipeline):
    other = PromptSpec("a blue square", "single", (ObjectSpec("square", "blue"),))
    opts = SMCConfig(particles=3, lam=50.0)
    both = search_smc(tiny_pipeline, [other.text, SPEC.text], [other, SPEC], [1, 3], CONFIG,
                      opts, brightness)
    alone, = search_smc(tiny_pipeline, [SPEC.text], [SPEC], [3], CONFIG, opts, brightness)
    assert both[1].rewards == pytest.approx(alone.rewards, abs=1e-4)
    assert both[1].resamples == alone.resamples
    assert np.abs(both[1].image.astype(int) - alone.image).max() <= 1


def test_search_parses_template_prompts(tiny_pipeline):
    images, results = search(tiny_pipeline, ["two red circles"], [1], CONFIG, "bestof",
                             BestOfConfig(n=2), reward=brightness)
    assert images.shape == (1, 16, 16, 3) and len(results[0].rewards) == 2


@pytest.mark.parametrize("text, message", [
    ("beam:n=2", "unknown search"),
    ("smc:particles=0", "particles"),
    ("bestof:k=3", "unknown key"),
    ("smc:lam=-1", "lam"),
])
def test_bad_search_specs_are_config_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_search(text)


def test_smc_refuses_multistep_samplers(tiny_pipeline):
    with pytest.raises(ConfigError, match="one-step samplers"):
        search_smc(tiny_pipeline, [SPEC.text], [SPEC], [0],
                   SampleConfig(sampler="dpmpp_2m", steps=3), SMCConfig(particles=2), constant)
