"""`load_detector`: one entry point for every detector file a user may have.

Formats are recognised from the file's content, never its name:
- our `.safetensors` (weights + architecture + preprocessing metadata),
- an mmsegmentation checkpoint (`{'meta', 'state_dict', ...}`): the official PAL4VST `.pth` as mmcv 1.x
  wrote it (with numpy scalars and the optimizer's state), or mmengine's (with its message hub); read
  as data by `torch_pickle`, which builds tensors, containers and numpy scalars and nothing else,
- a TorchScript archive (the official `end2end.pt`). TorchScript is a program: loading it with
  torch.jit runs code from the file. By default only its weights are read, as data (`torchscript.py`),
  and built into our own network when they are an mmseg Swin + UPerHead; anything else is refused.
  `trust_code=True` lets a file that cannot be read that way run as the program it is.
A name (no path) is a catalogue model (`pal_core.hub.catalogue`: the official PAL4VST checkpoints, once
installed by `pal download`, and the shipped pal-lite), a model installed under a name of one's own
(`pal models add FILE --name NAME`), or a shipped model (`pal_core.hub.resources` says
where those are). No source means the best installed model: pal4vst-unified when installed, else the
shipped pal-lite (saying so once). Loaded networks are cached, so asking again does not read the file
again.
"""

from __future__ import annotations

import os
import sys
import warnings
import zipfile
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ..detect.detector import Detector, DetectorInfo, PrecisionGuard
from ..detect.devices import is_auto, resolve_device, resolve_dtype
from ..detect.preprocess import Preprocess
from ..models.fusion import fuse_conv_bn
from ..models.swin_upernet import CheckpointMismatch, from_mmseg_checkpoint, is_mmseg_swin_upernet
from . import catalogue, model_store
from .model_store import locate_model  # noqa: F401  (part of this module's API; torch-free for `pal models`)
from .checkpoint import CheckpointError, DetectorCheckpoint, read_detector_file
from .resources import WEIGHTS_ENV, weights_dirs  # noqa: F401  (WEIGHTS_ENV: part of this module's API)
from .torch_pickle import PickleReadError, read_torch_checkpoint
from .torchscript import TorchScriptReadError, read_torchscript_weights
from .validation import check_checkpoint, check_tensors

DEFAULT_MODEL = "pal_lite"
TORCHSCRIPT_INPUT_SIZE = 512  # the official export has a static 512x512 input
MODEL_INPUT_SIZE = "model"  # load_detector's input_size: the size saved in the model file

_cache: dict[tuple, tuple] = {}
_CACHE_SIZE = 4


class ModelNotFoundError(FileNotFoundError):
    """No file at the given path, no shipped model of that name, or no default installed."""


def available_models() -> list[str]:
    """Names of the shipped models (files `<name>.safetensors` in the weights folders)."""
    names = {p.stem for d in weights_dirs() if d.is_dir() for p in d.glob("*.safetensors")}
    return sorted(names)


def _shipped(name: str) -> Path | None:
    return model_store.find_in(weights_dirs(), name)  # the same lookup as model_store.locate_model's


def not_installed_message(entry: catalogue.CatalogueEntry) -> str:
    return (f"{entry.name} is not installed: run `pal download {entry.name}` (or fetch {entry.page} in a "
            f"browser and run `pal models add FILE --name {entry.name}`)")


def default_model_notice() -> str | None:
    """What to tell the user when no model is given and the official one is not installed (else None)."""
    if model_store.find_installed(catalogue.PREFERRED) is not None:
        return None
    return (f"using the small shipped model {catalogue.FALLBACK}, which misses many real artifacts; for the "
            f"official PAL4VST detector run: pal download {catalogue.PREFERRED}")


_said: set[str] = set()


def _say_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        print(f"pal: {message}", file=sys.stderr)


def resolve_source(source: str | os.PathLike | None, download: bool = False) -> Path:
    """A path to an existing model file, from a path, a model's name, or None (the best installed).

    `download=True` fetches a catalogue model that is not installed yet (`pal download`); without it
    nothing is ever downloaded.
    """
    if source is None:
        return _default_model()
    name = str(source)
    path = Path(name).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise ModelNotFoundError(f"{path} is a folder; give the model file inside it (.safetensors, .pth or .pt)")
    entry = catalogue.find(name)
    if entry is not None:
        found = locate_model(name, download)
        if found is None:
            raise ModelNotFoundError(not_installed_message(entry) if not entry.shipped else
                                     f"the shipped model {name} is missing (looked in: "
                                     f"{', '.join(map(str, weights_dirs())) or 'no weights folder installed'}); "
                                     "reinstall the pack")
        return found
    looks_like_name = os.sep not in name and "/" not in name and not path.suffix
    if looks_like_name:  # a model installed under a name of one's own (`pal models add FILE --name NAME`)
        named = model_store.find_installed(name) or _shipped(name)
        if named is not None:
            return named
        installed = sorted(set(model_store.installed_names()) - set(catalogue.names()))
        raise ModelNotFoundError(f"no model named '{name}': not a file here, not in the catalogue "
                                 f"({', '.join(catalogue.names())}), not installed (installed: "
                                 f"{', '.join(installed) or 'none'}) and not a shipped model "
                                 f"(shipped: {', '.join(available_models()) or 'none'})")
    raise ModelNotFoundError(f"model file not found: {path}")


def _default_model() -> Path:
    """pal4vst-unified when installed, else the shipped default (saying so once)."""
    preferred = model_store.find_installed(catalogue.PREFERRED)
    if preferred is not None:
        return preferred
    shipped_file = _shipped(DEFAULT_MODEL)
    if shipped_file is None:
        raise ModelNotFoundError(
            f"no default model is installed (weights/{DEFAULT_MODEL}.safetensors not found). Pass a model: "
            f"--model PATH (an official PAL4VST end2end.pt or mmseg .pth, or a .safetensors made by "
            f"`pal convert`), or run `pal download {catalogue.PREFERRED}`. Shipped models: "
            f"{', '.join(available_models()) or 'none'}")
    _say_once(default_model_notice())
    return shipped_file


def sniff_format(path: Path) -> str:
    """'safetensors', 'torchscript' or 'torch' (a torch.save file), from the first bytes and zip entries."""
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) >= 9:
        header_len = int.from_bytes(head[:8], "little")
        if 2 <= header_len < 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile as error:
            raise CheckpointError(f"{path}: a damaged zip archive ({error}); re-copy or re-download the file") from error
        if any("/code/" in n or n.endswith("constants.pkl") for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            return "torch"
        raise CheckpointError(f"{path}: a zip archive that is neither a torch checkpoint nor TorchScript")
    if head[:1] == b"\x80":  # a pickle protocol marker: torch.save's legacy (non-zip) format
        return "torch"
    raise CheckpointError(
        f"{path}: not a detector file. Expected one of: a .safetensors written by `pal convert`, an "
        "mmsegmentation checkpoint (.pth, {'meta', 'state_dict'}), or a TorchScript end2end.pt")


def _read_torch_file(path: Path):
    """The object a torch.save file holds, read as data (tensors memory-mapped, see `torch_pickle`)."""
    if zipfile.is_zipfile(path):
        try:
            return read_torch_checkpoint(path)
        except PickleReadError as error:
            raise CheckpointError(f"{path}: could not be read as a checkpoint: {error}") from error
    try:  # the legacy (pre-zip) format: torch's own weights-only reader
        with open(path, "rb") as f:  # a file object: torch.load picks a reader from the suffix otherwise
            return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"{path}: could not be read as a torch checkpoint with weights_only=True ({error}). Only plain "
            "tensors and containers are loaded, never pickled code") from error


def _read_mmseg(path: Path) -> DetectorCheckpoint:
    loaded = _read_torch_file(path)
    if isinstance(loaded, dict) and "state_dict" in loaded:
        state_dict, meta = loaded["state_dict"], loaded.get("meta")
    elif isinstance(loaded, dict):
        state_dict, meta = loaded, None
    else:
        raise CheckpointError(f"{path}: holds a {type(loaded).__name__}, expected a dict with 'state_dict'")
    if isinstance(state_dict, dict):
        check_tensors(state_dict, str(path))  # a string or an integer table among the weights is no model
    if not isinstance(state_dict, dict) or not is_mmseg_swin_upernet(state_dict):
        raise CheckpointError(
            f"{path}: a torch checkpoint, but not an mmsegmentation Swin + UPerHead model (expected keys "
            "'backbone.patch_embed.projection.weight' and 'decode_head.conv_seg.weight')")
    model = _mmseg_model(path, state_dict, meta if isinstance(meta, dict) else None)
    return DetectorCheckpoint(model, path.stem, Preprocess(), source=f"mmseg checkpoint {path.name}")


def _mmseg_model(path: Path, state_dict: dict, meta: dict | None) -> nn.Module:
    try:
        return from_mmseg_checkpoint(state_dict, meta)
    except CheckpointMismatch as error:
        raise CheckpointError(f"{path}: keys or shapes do not fit an mmseg Swin + UPerHead model: {error}") from error


_MMSEG_PARTS = ("backbone.", "decode_head.", "auxiliary_head.")


def _read_torchscript_weights(path: Path) -> DetectorCheckpoint:
    """The network inside a TorchScript export of an mmseg model, from its weights alone (nothing runs)."""
    try:
        tensors = read_torchscript_weights(path)
    except TorchScriptReadError as error:
        raise CheckpointError(f"{path}: its weights could not be read ({error})") from error
    anchor = "backbone.patch_embed.projection.weight"
    prefixes = sorted(k[: -len(anchor)] for k in tensors if k.endswith(anchor))
    if not prefixes:
        raise CheckpointError(f"{path}: its weights are not named like an mmsegmentation Swin + UPerHead "
                              f"model (no '{anchor}')")
    prefix = prefixes[0]  # the shortest: the model itself, not a copy nested inside it
    check_tensors({k: v for k, v in tensors.items() if k.startswith(prefix)}, str(path))
    state_dict = {key[len(prefix):]: value.float() for key, value in tensors.items()
                  if key.startswith(prefix) and key[len(prefix):].startswith(_MMSEG_PARTS)}
    if not is_mmseg_swin_upernet(state_dict):
        raise CheckpointError(f"{path}: its weights are not an mmsegmentation Swin + UPerHead model")
    model = _mmseg_model(path, state_dict, None)
    return DetectorCheckpoint(model, path.stem, Preprocess(), source=f"weights of TorchScript {path.name}")


def _refuse_program(path: Path, reason: CheckpointError, can_run: bool = True) -> CheckpointError:
    """Why a TorchScript file whose weights are not readable as data was not loaded. `can_run` False: the
    caller needs weights (convert, install, a distillation student), so running it is no way out."""
    use_weights = ("Use the mmsegmentation .pth checkpoint of the same model (or a .safetensors made from it "
                   "by `pal convert`)")
    if not can_run:
        return CheckpointError(f"{reason}. {path.name} is a program (a TorchScript file) whose weights could not "
                               f"be read as data, so there is nothing to convert or install. {use_weights}")
    return CheckpointError(
        f"{reason}. {path.name} is a TorchScript file, which is a program: loading it runs code from the "
        f"file, and that code can read and write your files, so it was not loaded. {use_weights}; or, only if "
        "you trust whoever made this file, pass --allow-torchscript (trust_code=True in Python, "
        "allow_torchscript in the Load Artifact Detector node) to run it")


def _read_torchscript_program(path: Path, device: torch.device) -> nn.Module:
    """Runs the file's code: only ever called when the user said it may (trust_code)."""
    try:
        with warnings.catch_warnings():  # torch deprecates TorchScript, but the official release is one
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location=device)
    except Exception as error:
        raise CheckpointError(f"{path}: TorchScript archive could not be loaded ({error})") from error


def _check_torchscript_runs(module: nn.Module, path: Path, device: torch.device) -> None:
    """Runs one small input: a file traced on CUDA can hold CUDA-only constants and fail on the CPU."""
    probe = torch.zeros(1, 3, TORCHSCRIPT_INPUT_SIZE, TORCHSCRIPT_INPUT_SIZE, device=device)
    try:
        with torch.inference_mode():
            module(probe)
    except Exception as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        if device.type == "cpu" and ("cuda" in str(error).lower() or "nvidia" in str(error).lower()):
            raise CheckpointError(
                f"{path}: this TorchScript file was traced on a CUDA GPU and its graph needs CUDA, which this "
                f"machine does not have ({message}). Run it with device='cuda' on a GPU machine, or use the "
                "mmseg .pth checkpoint of the same model, which runs on any device") from error
        raise CheckpointError(f"{path}: TorchScript model failed on a test input [1,3,512,512] ({message})") from error


def load_detector(
    source: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = "auto",
    input_size: int | None | str = MODEL_INPUT_SIZE,
    batch_size: int = 8,
    download: bool = False,
    compile: bool = False,
    trust_code: bool = False,
    guard: PrecisionGuard | None | str = "auto",
) -> Detector:
    """Loads a detector from a file path, a model's name, or (None) the best installed model.

    `download=True` fetches a catalogue model that is not installed yet; never otherwise.

    `device` None or "auto": CUDA when available, else the CPU. `dtype` "auto" (or None): for networks
    whose masks stay those of fp32 in lower precision (PAL4VST's Swin + UPerNet), the fastest precision
    the device runs natively (bf16 on CPUs with AMX/AVX512-BF16 and recent GPUs, fp16 on older GPUs;
    see `devices.auto_dtype`), else fp32, with a `PrecisionGuard` that runs an image again in fp32 when
    its map is undecided at the threshold; "fp32" for exact reference results; "bf16"/"fp16" for raw
    speed, unguarded. `guard` "auto" is that rule; a `PrecisionGuard` guards any precision below fp32
    with its own band and share, None none.
    `input_size` is the square size the network runs at: "model" (default) takes the size saved in
    the model file (PAL4VST: 512), None runs it at each image's own size, as mmsegmentation does for
    whole-image inference. `compile=True` wraps the network in torch.compile (the first call traces
    and compiles it: slow once, see docs/benchmarks.md). `trust_code=True` allows a TorchScript
    file whose weights cannot be read as data to run as the program it is (its code can do anything
    a Python script can); without it such a file is refused.
    """
    path = resolve_source(source, download=download)
    torch_device = resolve_device(device)
    requested = "auto" if is_auto(dtype) else resolve_dtype(dtype, torch_device)
    stat = path.stat()
    if guard == "auto":
        # "auto" promises the masks of fp32: below it, images undecided at the threshold run again in fp32.
        guard = PrecisionGuard() if requested == "auto" else None
    elif guard is not None and not isinstance(guard, PrecisionGuard):
        raise ValueError(f"guard must be 'auto', None or a PrecisionGuard, not {guard!r}")
    # A guarded network keeps float32 weights beside the cast ones, so it is never shared with an unguarded one.
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, str(torch_device), requested, trust_code,
           guard is not None)
    if key not in _cache:
        _cache[key] = _load_uncached(path, torch_device, trust_code)
        while len(_cache) > _CACHE_SIZE:
            _cache.pop(next(iter(_cache)))
    model, info, preprocess, output, fixed = _cache[key]
    # "auto" goes below fp32 only for networks whose masks were shown to stay those of fp32 there.
    torch_dtype = resolve_dtype(requested, torch_device,
                                low_precision=output == "logits" and getattr(model, "auto_low_precision", False))
    if input_size != MODEL_INPUT_SIZE:
        preprocess = replace(preprocess, input_size=input_size)
    return Detector(model, info, preprocess, output, torch_device, torch_dtype, batch_size, fixed, compile, guard)


def read_checkpoint(source: str | os.PathLike | None) -> DetectorCheckpoint:
    """The network and metadata of a weights file (ours, mmseg, or the weights of an mmseg TorchScript
    export, read without running it), on the CPU in float32."""
    path = resolve_source(source)
    kind = sniff_format(path)
    try:
        return _read_weights(path, kind)
    except CheckpointError as error:
        raise (_refuse_program(path, error, can_run=False) if kind == "torchscript" else error) from error


def _read_weights(path: Path, kind: str) -> DetectorCheckpoint:
    readers = {"safetensors": read_detector_file, "torchscript": _read_torchscript_weights, "torch": _read_mmseg}
    checkpoint = readers[kind](path)
    check_checkpoint(checkpoint.model, checkpoint.preprocess, str(path))  # finite weights, sane preprocessing
    return checkpoint


def _load_uncached(path: Path, device: torch.device, trust_code: bool) -> tuple:
    """The network (for inference: BatchNorm folded into convolutions), its info and preprocessing.
    Weights stay on the CPU in float32: the Detector puts them on the device once. A TorchScript file
    runs as a program only with `trust_code` (see `_refuse_program`)."""
    kind = sniff_format(path)
    try:
        checkpoint = _read_weights(path, kind)  # path resolved and format sniffed once, above
    except CheckpointError as error:
        if kind != "torchscript":
            raise
        if not trust_code:
            raise _refuse_program(path, error) from error
        module = _read_torchscript_program(path, device)
        _check_torchscript_runs(module, path, device)
        info = DetectorInfo(path.stem, str(path), "torchscript", "torchscript")
        return module, info, Preprocess(input_size=TORCHSCRIPT_INPUT_SIZE), "labels", TORCHSCRIPT_INPUT_SIZE
    formats = {"safetensors": "safetensors", "torchscript": "torchscript-weights", "torch": "mmseg"}
    info = DetectorInfo(checkpoint.name, str(path), formats[kind], checkpoint.model.architecture)
    model = checkpoint.model.eval()
    fuse_conv_bn(model)
    return model, info, checkpoint.preprocess, "logits", None
