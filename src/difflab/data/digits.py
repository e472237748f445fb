"""scikit-learn's bundled handwritten digits (8x8, 1797 images) as a class-conditional Dataset.

From "Optical Recognition of Handwritten Digits" (UCI, Alpaydin and Kaynak, 1998); no download.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.utils.data import Dataset

from difflab.config import ConfigError

DIGIT_SIZES: tuple[int, ...] = (8, 16, 32)
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


class DigitsDataset(Dataset):
    """Item i -> {"image" (C, size, size) in [-1, 1] (ink bright), "caption", "label" 0-9}.

    `size` 16 or 32 upsamples bilinearly; `channels` 3 repeats the grey channel.
    """

    num_classes = 10

    def __init__(self, size: int = 8, channels: int = 3) -> None:
        if size not in DIGIT_SIZES:
            raise ConfigError(f"digits size {size!r} invalid; valid: {list(DIGIT_SIZES)}")
        if channels not in (1, 3):
            raise ConfigError(f"digits channels {channels!r} invalid; valid: 1, 3")
        bunch = load_digits()
        x = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0  # (N, 1, 8, 8) in [0,1]
        if size != 8:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        self.images = (x.clamp(0, 1) * 2 - 1).expand(-1, channels, -1, -1).contiguous()
        self.labels = torch.tensor(bunch.target, dtype=torch.long)  # (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        label = int(self.labels[index])
        return {
            "image": self.images[index],
            "caption": f"a handwritten {DIGIT_WORDS[label]}",
            "label": label,
        }
