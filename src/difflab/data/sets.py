"""Training data sets by name (`data.name` in a training config): shapes, digits, folders."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from difflab.config import ConfigError, from_dict
from difflab.registry import Registry

DATASETS: Registry[Callable[[dict[str, Any]], Any]] = Registry("data set")


@DATASETS.register("shapes")
def _shapes(options: dict[str, Any]) -> Any:
    from difflab.data.shapes_dataset import ShapesConfig, ShapesDataset

    return ShapesDataset(from_dict(ShapesConfig, options, "data.options"))


@DATASETS.register("digits")
def _digits(options: dict[str, Any]) -> Any:
    from difflab.data.digits import DigitsDataset

    return DigitsDataset(**_kwargs(DigitsDataset, options))


@DATASETS.register("folder")
def _folder(options: dict[str, Any]) -> Any:
    from difflab.data.folder import ImageFolderDataset

    return ImageFolderDataset(**_kwargs(ImageFolderDataset, options))


def _kwargs(cls: type, options: dict[str, Any]) -> dict[str, Any]:
    """`options` checked against `cls`'s constructor: unknown or missing ones raise ConfigError."""
    import inspect

    params = [n for n in inspect.signature(cls).parameters if n != "self"]
    try:
        inspect.signature(cls).bind(**options)
    except TypeError as e:
        raise ConfigError(f"data.options for {cls.__name__}: {e}; valid: {', '.join(params)}") \
            from None
    return options
