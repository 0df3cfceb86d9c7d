"""Our detector file format: one `.safetensors` file with the weights and, in its metadata, the
architecture, its config and the preprocessing contract, so a file is loadable with nothing else.

Metadata keys (all strings, JSON where structured):
    pal.format        "detector/1"
    pal.architecture  a name registered in `pal_core.models.ARCHITECTURES`
    pal.config        JSON: the architecture's constructor config
    pal.preprocess    JSON: mean, std (0..255 RGB), input_size
    pal.name          the model's name
    pal.source        where the weights came from (free text)
    pal.extra         JSON: anything else worth keeping (training recipe, metrics)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..atomic import atomic_path
from ..detect.preprocess import Preprocess
from ..models import build_model

FORMAT = "detector/1"


class CheckpointError(ValueError):
    """A detector file that cannot be read or does not fit what it claims to be."""


@dataclass
class DetectorCheckpoint:
    """A network plus everything needed to run it as PAL4VST does."""

    model: nn.Module
    name: str
    preprocess: Preprocess = field(default_factory=Preprocess)
    source: str = ""
    extra: dict = field(default_factory=dict)


def save_detector_file(checkpoint: DetectorCheckpoint, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Writes `checkpoint` atomically (a temporary file renamed into place); never overwrites by accident."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: detector files are written as .safetensors; name it {path.stem}.safetensors")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another name or pass overwrite=True (--overwrite)")
    model = checkpoint.model
    metadata = {
        "pal.format": FORMAT,
        "pal.architecture": model.architecture,
        "pal.config": json.dumps(model.config.to_dict()),
        "pal.preprocess": json.dumps(checkpoint.preprocess.to_dict()),
        "pal.name": checkpoint.name,
        "pal.source": checkpoint.source,
        "pal.extra": json.dumps(checkpoint.extra),
    }
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_detector_file(path: str | os.PathLike) -> DetectorCheckpoint:
    """Reads a file written by `save_detector_file`, checking every key and shape against its config."""
    from .validation import check_config, check_tensors, parse_metadata_json  # it imports this module

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            if metadata.get("pal.format") != FORMAT:
                raise CheckpointError(
                    f"{path}: a safetensors file, but not a PAL detector (metadata 'pal.format' is "
                    f"{metadata.get('pal.format')!r}, expected {FORMAT!r}). Convert a model with `pal convert`")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except CheckpointError:
        raise
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from error
    check_tensors(tensors, str(path))
    try:
        config = parse_metadata_json(metadata["pal.config"], "pal.config", str(path))
        check_config(config, str(path))  # before building: the network allocates what the config asks for
        model = build_model(metadata["pal.architecture"], config)
        preprocess = Preprocess.from_dict(parse_metadata_json(metadata["pal.preprocess"], "pal.preprocess", str(path)))
        extra = parse_metadata_json(metadata.get("pal.extra") or "{}", "pal.extra", str(path))
    except CheckpointError:
        raise
    except (KeyError, ValueError, TypeError, RuntimeError) as error:  # RuntimeError: timm's unknown encoder
        raise CheckpointError(f"{path}: bad PAL metadata ({error})") from error
    try:
        result = model.load_state_dict(tensors, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise CheckpointError(f"{path}: weights do not fit the {metadata['pal.architecture']} config: {error}") from error
    problems = [f"missing '{k}'" for k in result.missing_keys] + [f"unexpected '{k}'" for k in result.unexpected_keys]
    if problems:
        raise CheckpointError(f"{path}: weights do not fit the {metadata['pal.architecture']} config: "
                              + "; ".join(problems[:8]))
    return DetectorCheckpoint(model, metadata.get("pal.name") or path.stem, preprocess,
                              metadata.get("pal.source", ""), extra)
