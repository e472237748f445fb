"""The KL autoencoder: shapes per factor, loss, scale factor, training, save/load."""

from __future__ import annotations

import pytest
import torch

from difflab.config import ConfigError
from difflab.data.shapes_dataset import ShapesConfig
from difflab.models.autoencoder import (
    Autoencoder,
    AutoencoderConfig,
    AutoencoderTrainConfig,
    autoencoder_loss,
    load_autoencoder,
    psnr,
    save_autoencoder,
    train_autoencoder,
)

TINY = dict(base_channels=8, norm_groups=4)


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_latents_have_the_configured_factor_and_channels(factor):
    model = Autoencoder(AutoencoderConfig(downsample_factor=factor, latent_channels=3, **TINY))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    posterior = model.encode(x)
    assert posterior.mean.shape == (2, 3, 16 // factor, 16 // factor)
    assert model.decode(posterior.sample()).shape == x.shape
    assert (posterior.kl() >= 0).all()


def test_bad_configs_and_inputs_are_named():
    with pytest.raises(ConfigError, match="downsample_factor"):
        AutoencoderConfig(downsample_factor=3)
    with pytest.raises(ValueError, match="multiples"):
        model = Autoencoder(AutoencoderConfig(downsample_factor=8, **TINY))
        model.encode(torch.zeros(1, 3, 12, 12))


def test_sampling_is_seeded_and_kl_is_zero_for_the_prior():
    model = Autoencoder(AutoencoderConfig(**TINY))
    x = torch.rand(2, 3, 8, 8)
    a = model.encode_latents(x, torch.Generator().manual_seed(3))
    b = model.encode_latents(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    prior = model.encode(x)._replace(mean=torch.zeros(1, 4), logvar=torch.zeros(1, 4))
    assert prior.kl().item() == 0


def test_scale_factor_gives_unit_variance_latents_and_decode_inverts_it():
    model = Autoencoder(AutoencoderConfig(**TINY))
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    scale = model.fit_scale_factor(x)
    with torch.no_grad():
        assert model.encode(x).mean.mul(scale).std().item() == pytest.approx(1.0, rel=1e-4)
        z = model.encode(x).mean
        torch.testing.assert_close(model.decode_latents(z * scale), model.decode(z))


def test_a_few_steps_on_one_batch_reduce_the_loss():
    torch.manual_seed(0)
    model = Autoencoder(AutoencoderConfig(**TINY))
    smooth = torch.rand(4, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    x = torch.nn.functional.interpolate(smooth, size=8, mode="bilinear") * 2 - 1
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(15):
        loss, _ = autoencoder_loss(model, x, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_psnr_of_known_error():
    x = torch.zeros(1, 3, 4, 4)
    assert psnr(x + 0.2, x) == pytest.approx(10 * torch.log10(torch.tensor(4 / 0.04)).item())


def test_train_autoencoder_saves_a_loadable_model(tmp_path):
    path = tmp_path / "ae.safetensors"
    cfg = AutoencoderTrainConfig(model=AutoencoderConfig(**TINY), data=ShapesConfig(size=16),
                                 steps=2, batch_size=2, eval_images=4, out=str(path))
    logs = []
    model = train_autoencoder(cfg, log=logs.append)
    assert any("PSNR" in line for line in logs)
    loaded = load_autoencoder(path)
    assert loaded.scale_factor.item() == model.scale_factor.item() != 1.0
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.decode(loaded.encode(x).mean), model.decode(model.encode(x).mean))
    save_autoencoder(tmp_path / "b.safetensors", loaded)
    with pytest.raises(FileNotFoundError):
        load_autoencoder(tmp_path / "missing.safetensors")
