"""Train difflab's KL autoencoder on the shapes world.

Usage: python scripts/train_autoencoder.py [--config ae.toml] [key=value ...]
e.g.   python scripts/train_autoencoder.py steps=400 batch_size=16 model.base_channels=16 \
           out=runs/ae/autoencoder.safetensors
"""

from __future__ import annotations

import sys

from difflab.config import ConfigError, load_toml, parse_override, replace_path
from difflab.models.autoencoder import AutoencoderTrainConfig, train_autoencoder
from difflab.registry import UnknownNameError


def main(argv: list[str]) -> int:
    try:
        config = AutoencoderTrainConfig()
        if argv[:1] == ["--config"]:
            if len(argv) < 2:
                raise ConfigError("--config needs a TOML file path")
            config, argv = load_toml(AutoencoderTrainConfig, argv[1]), argv[2:]
        for item in argv:
            config = replace_path(config, *parse_override(item))
        train_autoencoder(config)
    except (ConfigError, UnknownNameError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
