"""What a detector file must hold to be worth running: checked when it is installed and when it is loaded.

A file that reads without error can still be garbage: NaN weights give NaN probabilities, which
would score every image as clean; integer or bool weights are cast silently and compute nonsense; a
std of 0 divides by zero; an input size of a million pixels or a config of huge layers takes all the
memory before any weight is read. Each check raises a `CheckpointError` that names what is wrong and
says what to do, so `pal models add`, `pal download`, `pal convert`, `pal distill` and every loader
refuse such a file instead of reporting results from it.
"""

from __future__ import annotations

import json
import math
from typing import Mapping

import torch
from torch import nn

from ..detect.preprocess import Preprocess
from .checkpoint import CheckpointError

# Integer tensors a real network keeps beside its weights (BatchNorm's counter, Swin's index tables).
INTEGER_BUFFER_SUFFIXES = ("num_batches_tracked", "relative_position_index")
MAX_INPUT_SIZE = 8192  # the square size the network runs at; PAL4VST's is 512
MAX_CONFIG_NUMBER = 1024  # any size in an architecture config (Swin-B: embed 128, head 512, window 12)
MAX_CONFIG_LIST = 16  # entries of a list in a config (Swin: 4 stages)
MAX_CONFIG_TEXT = 256  # characters of a text setting (an encoder's name)
MAX_METADATA_CHARS = 1_000_000  # one metadata value; a model's JSON settings are a few hundred characters

_REDOWNLOAD = "re-download or re-convert the model, or use another file"


def check_tensors(tensors: Mapping, where: str) -> None:
    """Every entry of a raw state dict is a tensor, weights are floating point, and all are finite."""
    for key, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{where}: the weight '{key}' is a {type(tensor).__name__}, not a tensor; "
                                  f"the file is damaged or not a model ({_REDOWNLOAD})")
        if not tensor.is_floating_point() and not str(key).endswith(INTEGER_BUFFER_SUFFIXES):
            raise CheckpointError(f"{where}: the weight '{key}' holds {str(tensor.dtype).replace('torch.', '')} "
                                  f"values, not floating point; a network with such weights computes nonsense "
                                  f"({_REDOWNLOAD})")
        _check_finite(key, tensor, where)


def check_model(model: nn.Module, where: str) -> None:
    """All floating-point weights and buffers of a built network are finite (none is NaN or infinite)."""
    for key, tensor in model.state_dict().items():
        _check_finite(key, tensor, where)


def _check_finite(key: str, tensor: torch.Tensor, where: str) -> None:
    if tensor.is_floating_point() and tensor.numel() and not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise CheckpointError(f"{where}: the weight '{key}' holds {bad} NaN or infinite values; such a model "
                              f"gives no usable probabilities (it would score every image as clean) ({_REDOWNLOAD})")


def check_preprocess(preprocess: Preprocess, where: str) -> None:
    """Mean and std are three finite numbers each, std positive, and the input size is sane."""
    problems = []
    for name in ("mean", "std"):
        values = getattr(preprocess, name)
        if (not isinstance(values, (tuple, list)) or len(values) != 3
                or not all(_is_number(v) and math.isfinite(v) for v in values)):
            problems.append(f"{name} must be three finite numbers, not {_short(values)}")
        elif name == "std" and not all(v > 0 for v in values):
            problems.append(f"std must be positive (it divides the pixels), not {_short(values)}")
    size = preprocess.input_size
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or not 32 <= size <= MAX_INPUT_SIZE):
        problems.append(f"input_size must be a whole number of pixels from 32 to {MAX_INPUT_SIZE}, not {_short(size)}")
    if problems:
        raise CheckpointError(f"{where}: its preprocessing settings are unusable: " + "; ".join(problems)
                              + f" ({_REDOWNLOAD})")


def check_config(config: object, where: str) -> None:
    """An architecture config is a flat dict of bounded numbers, short texts and short lists of numbers:
    checked before the network is built, which allocates every layer the config asks for."""
    if not isinstance(config, dict):
        raise CheckpointError(f"{where}: its architecture config is a {type(config).__name__}, not a dict")
    problems = [f"{key}: {problem}" for key, value in config.items() if (problem := _config_value_problem(value))]
    if problems:
        raise CheckpointError(f"{where}: its architecture config asks for an unusable network: "
                              + "; ".join(problems[:4]) + f" ({_REDOWNLOAD})")


def _config_value_problem(value: object) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return None if len(value) <= MAX_CONFIG_TEXT else f"a text of {len(value)} characters"
    if _is_number(value):
        if not math.isfinite(value) or not 0 <= value <= MAX_CONFIG_NUMBER:
            return f"{_short(value)} is outside 0..{MAX_CONFIG_NUMBER}"
        return None
    if isinstance(value, list):
        if len(value) > MAX_CONFIG_LIST:
            return f"a list of {len(value)} entries (at most {MAX_CONFIG_LIST})"
        inner = ["a nested value" if isinstance(v, (list, dict)) else _config_value_problem(v) for v in value]
        return next((problem for problem in inner if problem), None)
    return f"a {type(value).__name__}"


def parse_metadata_json(text: object, key: str, where: str) -> object:
    """A JSON metadata value, refusing huge or deeply nested ones with a sentence (json.loads would raise
    RecursionError, or take the memory)."""
    if not isinstance(text, str):
        raise CheckpointError(f"{where}: metadata '{key}' is not text")
    if len(text) > MAX_METADATA_CHARS:
        raise CheckpointError(f"{where}: metadata '{key}' is {len(text)} characters long (at most "
                              f"{MAX_METADATA_CHARS}); the file is damaged or not made by pal ({_REDOWNLOAD})")
    try:
        return json.loads(text)
    except RecursionError:
        raise CheckpointError(f"{where}: metadata '{key}' is nested too deeply to be a model's settings; "
                              f"the file is damaged or not made by pal ({_REDOWNLOAD})") from None
    except ValueError as error:
        raise CheckpointError(f"{where}: metadata '{key}' is not valid JSON ({error})") from error


def check_checkpoint(model: nn.Module, preprocess: Preprocess, where: str) -> None:
    """What loading and installing check on every network read from a file, whatever its format."""
    check_preprocess(preprocess, where)
    check_model(model, where)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
