"""Frozen-dataclass configs that round-trip to dicts, JSON and TOML, rejecting unknown keys."""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

C = TypeVar("C")


class ConfigError(ValueError):
    """A config value or key a user got wrong; the message names it and what is valid.

    The base of every error a user can cause: the CLI prints it as one `error: ...` line and
    exits 2; any other exception is a bug (see `difflab.crash`).
    """


class MissingFileError(ConfigError, FileNotFoundError):
    """A file or folder the user named does not exist (also a FileNotFoundError)."""


class StorageError(ConfigError):
    """A write failed for a reason outside difflab (disk full, permission denied, read-only)."""


# How much of a text file (config, grid, quant config, metadata) is read at most.
MAX_TEXT_FILE_BYTES = 16 * 1024 * 1024


def read_text_file(path: str | Path, what: str) -> str:
    """The text of a UTF-8 file; a missing, unreadable, huge or non-UTF-8 file is a ConfigError
    naming `what` (e.g. "config file") and the path."""
    p = Path(path)
    if not p.exists():
        raise MissingFileError(f"{what} not found: {p}")
    if p.is_dir():
        raise ConfigError(f"{what} {p} is a folder; expected a file")
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_TEXT_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"cannot read {what} {p}: {e.strerror or e}") from None
    if len(raw) > MAX_TEXT_FILE_BYTES:
        raise ConfigError(f"{what} {p} is larger than {MAX_TEXT_FILE_BYTES >> 20} MiB; "
                          "is it the right file?")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(f"{what} {p} is UTF-16 text; save it as UTF-8")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} {p} is not UTF-8 text (byte {e.start}: "
                          f"{raw[e.start:e.start + 1]!r}); save it as UTF-8") from None
    if "\x00" in text:
        raise ConfigError(f"{what} {p} holds NUL bytes: a binary file, not text")
    return text.removeprefix("\ufeff")  # a UTF-8 byte-order mark is harmless


def storage_error(e: OSError, what: str) -> StorageError:
    """A one-line StorageError for a failed write of `what` (ENOSPC, EACCES, EROFS, ...)."""
    reason = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
              errno.EACCES: "permission denied", errno.EPERM: "permission denied",
              errno.EROFS: "the file system is read-only"}.get(e.errno or -1)
    detail = reason or (e.strerror or str(e))
    return StorageError(f"could not write {what}: {detail}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass (possibly nested) as plain dicts, lists and scalars."""
    return dataclasses.asdict(cfg)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        item = args[0] if args else Any
        out = [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {list(choices)}")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: {value!r} is not a finite number")
    if tp in (int, float, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[C], data: dict[str, Any], where: str = "") -> C:
    """Build dataclass `cls` from `data`; unknown keys and wrong types raise ConfigError."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]!r} for {cls.__name__}; valid: {', '.join(fields)}"
        )
    kwargs = {
        k: _coerce(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()
    }
    return cls(**kwargs)


def replace_path(cfg: C, dotted: str, value: Any) -> C:
    """Return a copy of `cfg` with `a.b.c = value` (the value parsed as TOML when a string)."""
    head, _, rest = dotted.partition(".")
    names = [f.name for f in dataclasses.fields(cfg)]  # type: ignore[arg-type]
    if head not in names:
        raise ConfigError(f"unknown key {dotted!r}; valid: {', '.join(names)}")
    if rest:
        return dataclasses.replace(cfg, **{head: replace_path(getattr(cfg, head), rest, value)})
    data = to_dict(cfg)
    data[head] = value
    return from_dict(type(cfg), data)


def parse_override(text: str) -> tuple[str, Any]:
    """Parse `key=value` with the value read as a TOML literal (bare words are strings)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip(), value


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise ConfigError(f"cannot write {v!r} to TOML")


def dumps_toml(data: dict[str, Any], prefix: str = "") -> str:
    """Write nested dicts of scalars and lists as TOML (None values are left out)."""
    lines, tables = [], []
    for k, v in data.items():
        if isinstance(v, dict):
            tables.append((k, v))
        elif v is not None:
            lines.append(f"{k} = {_toml_value(v)}")
    out = "\n".join(lines)
    for k, v in tables:
        name = f"{prefix}{k}"
        out += f"\n\n[{name}]\n" + dumps_toml(v, prefix=f"{name}.")
    return out.strip() + "\n"


def load_toml(cls: type[C], path: str | Path, what: str = "config file") -> C:
    """Load dataclass `cls` from a UTF-8 TOML file; every problem raises ConfigError."""
    return from_dict(cls, read_toml(path, what))


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """A TOML file as a dict; an unreadable file or invalid TOML raises ConfigError."""
    text = read_text_file(path, what)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
