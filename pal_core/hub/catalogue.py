"""The models users can ask for by name: the official PAL4VST checkpoints and the one we ship.

The official checkpoints are the authors' files on Google Drive. Their repository carries no
licence, so we never redistribute them: `pal download NAME` fetches them from the authors' link
on the user's machine (see `pal_core.hub.download`). Drive file ids are those listed in the official
README; we take the PyTorch (mmsegmentation) `.pth` of each, which converts to our `.safetensors`
without running any code, and fall back to the TorchScript export of the same model when the `.pth`
cannot be used: its weights are read as data too, its program is never run.

`$PAL_CATALOGUE` names a JSON file that overrides entries field by field, for mirrors and tests:
    {"pal4vst-unified": {"url": "http://mirror.local/pal4vst-unified.pth"}}
A `url` replaces the Drive link (`torchscript_url` that of the TorchScript export, the fallback); an
`architecture` replaces the expected network shape.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

CATALOGUE_ENV = "PAL_CATALOGUE"

# The PAL4VST network: the config the authors call "swin-large" is Swin-B with a 512-channel UPerHead
# (as `SwinUPerNetConfig` spells it). A download must convert to exactly this, key by key and shape by shape.
PAL4VST_ARCHITECTURE = {
    "embed_dim": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32], "window_size": 12,
    "patch_size": 4, "head_channels": 512, "pool_scales": [1, 2, 3, 6], "num_classes": 2,
}
# The authors publish no sizes. A checkpoint's state_dict is ~485 MB (121.3 M float32 values with the
# auxiliary head); mmcv's save-best files also hold AdamW's two moments per parameter (~1.46 GB, the size
# of a file written by a real PAL4VST training run); the TorchScript export holds the weights once. So a
# range, and the disk checks use the length the server announces.
PAL4VST_DOWNLOAD_BYTES = (485_000_000, 1_470_000_000)
# What the converted .safetensors of this network takes: its state dict, counted from the built network.
PAL4VST_CONVERTED_BYTES = 480_531_016


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    purpose: str  # what the model is for: shown by `pal models` and in the node's tooltip
    origin: str  # who made the file and where it comes from
    drive_id: str | None = None  # the authors' PyTorch checkpoint on Google Drive
    torchscript_drive_id: str | None = None  # their TorchScript export: the fallback, its weights read as data
    url: str | None = None  # a direct link replacing Drive (a mirror; set through $PAL_CATALOGUE)
    torchscript_url: str | None = None  # a direct link replacing the TorchScript export's Drive link
    download_bytes: tuple[int, int] | None = None  # smallest and largest size the file may have; None: unknown
    converted_bytes: int | None = None  # size of the installed .safetensors, for the disk check
    architecture: dict = field(default_factory=dict)  # expected SwinUPerNetConfig fields
    shipped: str | None = None  # name of the shipped weights file (weights/<shipped>.safetensors)

    @property
    def downloadable(self) -> bool:
        return self.drive_id is not None or self.url is not None

    @property
    def torchscript_source(self) -> dict | None:
        """gdown's arguments for the TorchScript export of the same model (None when there is none).
        A mirror (`url`) replaces the authors' host: its fallback is its own `torchscript_url` or none."""
        if self.torchscript_url:
            return {"url": self.torchscript_url}
        if self.url:
            return None
        return {"id": self.torchscript_drive_id} if self.torchscript_drive_id else None

    @property
    def page(self) -> str | None:
        """The link a person clicks to fetch the file in a browser."""
        if self.url:
            return self.url
        return f"https://drive.google.com/file/d/{self.drive_id}/view" if self.drive_id else None

    @property
    def file_name(self) -> str:
        return f"{self.name}.safetensors"


def _official(name: str, purpose: str, drive_id: str, torchscript_drive_id: str) -> CatalogueEntry:
    """One of the authors' checkpoints: all share their origin, network and sizes."""
    return CatalogueEntry(
        name, purpose, "the PAL4VST authors' checkpoint (Google Drive; no licence given: never redistributed, "
                       "fetched from their link)",
        drive_id=drive_id, torchscript_drive_id=torchscript_drive_id, download_bytes=PAL4VST_DOWNLOAD_BYTES,
        converted_bytes=PAL4VST_CONVERTED_BYTES, architecture=PAL4VST_ARCHITECTURE)


ENTRIES: tuple[CatalogueEntry, ...] = (
    _official("pal4vst-unified", "the official detector for images of every synthesis task the paper covers except "
              "shadow removal; the one to use", "1414RYir0Q58Ix2CKrZoDmA5iilx8Gopb", "1bGjEKquWa4cZJ6v52NoRfViwKK15U7vd"),
    _official("pal4vst-stylegan2", "the paper's specialist for StyleGAN2-generated images",
              "1sHWQLwpt1eM36ttjdIdXLQIuLYftJoWR", "1FYId9CSmP0rEE1c-2E7aGaPD0WuRdX6o"),
    _official("pal4vst-shadow", "the paper's specialist for shadow-removal results (the unified model does not cover "
              "them)", "1AOuSwSFwN5X1u6SYni8KehhjFquBpJ6Q", "1omx3lhYNRjJiPY49HoknVUwiy-J0uxcr"),
    CatalogueEntry(
        "pal-lite",
        "small model shipped with the pack (3 M parameters, fast on a CPU): few false alarms, misses many "
        "real artifacts; the fallback when no official model is installed",
        "ours, shipped in weights/ (trained on synthetic artifacts; see weights/README.md)",
        shipped="pal_lite"),
)

PREFERRED = "pal4vst-unified"  # the default when installed
FALLBACK = "pal-lite"  # the default otherwise


class UnknownModelError(KeyError):
    """A name that is not in the catalogue."""

    def __str__(self) -> str:
        return str(self.args[0])


def entries() -> list[CatalogueEntry]:
    """The catalogue, with the overrides of $PAL_CATALOGUE applied."""
    overrides = _overrides()
    return [replace(e, **overrides.get(e.name, {})) for e in ENTRIES]


def names() -> list[str]:
    return [e.name for e in ENTRIES]


def find(name: str) -> CatalogueEntry | None:
    return next((e for e in entries() if e.name == name), None)


def get(name: str) -> CatalogueEntry:
    entry = find(name)
    if entry is None:
        raise UnknownModelError(f"'{name}' is not in the model catalogue (known: {', '.join(names())})")
    return entry


def _overrides() -> dict[str, dict]:
    path = os.environ.get(CATALOGUE_ENV)
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except RecursionError:
        raise ValueError(f"${CATALOGUE_ENV}={path}: nested too deeply to be a catalogue (expected {{model name: "
                         "{field: value}}); fix the file or unset the variable") from None
    except (OSError, ValueError) as error:
        raise ValueError(f"${CATALOGUE_ENV}={path}: not a readable JSON file ({error})") from error
    allowed = {"url", "drive_id", "torchscript_url", "torchscript_drive_id", "architecture"}
    # Mirror files written for earlier releases may carry approx_bytes (a guessed size, replaced by the
    # server's announced length): still accepted, and ignored, so they keep working.
    ignored = {"approx_bytes"}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"${CATALOGUE_ENV}={path}: expected {{model name: {{field: value}}}}")
    for name, fields in data.items():
        if name not in names():
            raise ValueError(f"${CATALOGUE_ENV}={path}: '{name}' is not in the catalogue ({', '.join(names())})")
        unknown = set(fields) - allowed - ignored
        if unknown:
            raise ValueError(f"${CATALOGUE_ENV}={path}: {name}: cannot override {sorted(unknown)} "
                             f"(allowed: {sorted(allowed)})")
    return {name: {k: v for k, v in fields.items() if k not in ignored} for name, fields in data.items()}
