"""The weights inside a TorchScript archive, read as data: nothing in the file is run or imported.

A TorchScript file is a program: loading it with torch.jit runs its `__setstate__` methods, and calling it runs
its code, which can read and write files. Its weights are plain data beside the code, though: the
zip holds `<root>/data.pkl`, a pickle of the module tree whose tensors point at raw storages in
`<root>/data/<key>`. This module unpickles that tree with an unpickler that knows four things only
(tensor rebuilds, storage types, OrderedDict and TorchScript objects, which become attribute dicts),
checks every tensor against its storage, and returns the tensors under their module paths
(`backbone.stages.0.blocks.0.attn.w_msa.qkv.weight`, ...), as a state dict would name them.
The official PAL4VST `end2end.pt` keeps mmsegmentation's module names, so its weights go through
the same converter as the `.pth` checkpoint.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections import OrderedDict

import torch

from .torch_pickle import STORAGE_DTYPES, PickleReadError, StorageType, rebuild_tensor, stored_entry

_MAX_PICKLE_BYTES = 256 * 2**20  # the module tree without its tensors is kilobytes; a bigger one is hostile


class TorchScriptReadError(ValueError):
    """The archive is damaged, or holds something other than modules and tensors."""


class _ScriptObject:
    """A TorchScript object (module or class instance) as data: its attributes, nothing callable."""

    def __new__(cls, *args):  # pickle's NEWOBJ calls this without __init__
        obj = super().__new__(cls)
        obj.attributes = {}
        return obj

    def __init__(self, *args):
        pass

    def __setstate__(self, state):  # pickle's BUILD: a module's attributes, or a custom class's state
        if isinstance(state, dict):
            self.attributes = state


class _WeightsUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, root: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.root = archive, root
        self.storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str):
        if module == "__torch__" or module.startswith("__torch__."):
            return _ScriptObject
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return StorageType(STORAGE_DTYPES[name])
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        raise TorchScriptReadError(f"holds '{module}.{name}', which is not a weight: refused, nothing was run")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], StorageType) and isinstance(pid[2], str) and isinstance(pid[4], int)):
            raise TorchScriptReadError(f"an unknown storage reference {pid!r:.80}")
        _, storage_type, key, _, numel = pid
        if key not in self.storages:
            self.storages[key] = self._read_storage(key, storage_type.dtype, numel)
        return self.storages[key]

    def _read_storage(self, key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        info = stored_entry(self.archive, f"{self.root}/data/{key}", dtype, numel)  # PickleReadError: see below
        return torch.frombuffer(bytearray(self.archive.read(info)), dtype=dtype) if numel else torch.empty(0, dtype=dtype)


def _archive_root(names: list[str]) -> str:
    roots = [n[: -len("/data.pkl")] for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(roots) != 1:
        raise TorchScriptReadError("not a TorchScript archive (no single <root>/data.pkl)")
    return roots[0]


def read_torchscript_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor attribute of the archive's module tree, keyed by its dotted path. Runs nothing."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            root = _archive_root(names)
            if f"{root}/byteorder" in names and archive.read(f"{root}/byteorder").strip() != b"little":
                raise TorchScriptReadError("its tensors are not stored little-endian, which is not supported")
            info = archive.getinfo(f"{root}/data.pkl")
            if info.file_size > _MAX_PICKLE_BYTES:
                raise TorchScriptReadError(f"its module tree is {info.file_size} bytes, far more than any model's")
            tree = _WeightsUnpickler(archive.read(info), archive, root).load()
    except TorchScriptReadError:
        raise
    except PickleReadError as error:  # a tensor or storage entry that does not fit (the checks are shared)
        raise TorchScriptReadError(str(error)) from error
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, RecursionError, MemoryError, OverflowError) as error:
        raise TorchScriptReadError(f"damaged ({type(error).__name__}: {error})") from error
    return _named_tensors(tree)


def _named_tensors(tree) -> dict[str, torch.Tensor]:
    """Tensors under their attribute paths; walked without recursion, each object once."""
    tensors: dict[str, torch.Tensor] = {}
    pending, seen = [("", tree)], set()
    while pending:
        prefix, node = pending.pop()
        if not isinstance(node, _ScriptObject) or id(node) in seen:
            continue
        seen.add(id(node))
        for name, value in node.attributes.items():
            key = f"{prefix}{name}"
            if isinstance(value, torch.Tensor):
                tensors[key] = value
            elif isinstance(value, _ScriptObject):
                pending.append((f"{key}.", value))
    return dict(sorted(tensors.items()))
