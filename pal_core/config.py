"""The one base of every settings dataclass saved as a JSON dict: architectures' configs in model files,
preprocessing in model files, training recipes in run folders."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import ClassVar


class SavedConfig:
    """Mixin for dataclasses (frozen or not) saved as JSON: tuples are written as lists and read back as
    tuples. Keys the class does not know are an error, or skipped where `SKIPS_UNKNOWN_KEYS` (files that
    another version wrote, whose extra settings this one has no use for)."""

    SKIPS_UNKNOWN_KEYS: ClassVar[bool] = False

    @classmethod
    def from_dict(cls, values: dict):
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown and not cls.SKIPS_UNKNOWN_KEYS:
            raise ValueError(f"unknown {cls.__name__} keys {sorted(unknown)}; expected a subset of {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in known})

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class ModelConfig(SavedConfig):
    """The base of every architecture's config (subclasses add fields); strict: a model file that names a
    setting this version does not have describes a network it cannot build."""
