"""A `torch.save` checkpoint read as data, as training frameworks really write them.

The official PAL4VST `.pth` files were written by mmcv 1.x's save-best hook during an mmseg 0.x run:
besides `state_dict` they hold `meta` (numpy scalars such as `hook_msgs['best_score']`, numpy dtypes,
the config text) and `optimizer` (AdamW's `exp_avg`, `exp_avg_sq`, `step`: twice the weights again).
Checkpoints saved by mmseg 1.x / mmengine also hold `message_hub` with mmengine objects (HistoryBuffer,
numpy arrays) and `param_schedulers`. `torch.load(weights_only=True)` refuses all of these.

This reader unpickles the archive's `data.pkl` with an allow-list that can build data and nothing
else: tensors (checked against their storages), containers, bytes, numpy scalars and dtypes (under
numpy 1's `numpy.core` and numpy 2's `numpy._core` names, built from their raw bytes by us), and
inert stand-ins (`Bookkeeping`) for the mm* frameworks' own classes, which keep their state as plain
data and whose code is never imported. Any other global is refused by name before anything is built.

Storages are views of a private memory map of the file: the optimizer's tensors are never read from
disk, so peak memory is the weights the caller touches, not the whole file (see docs/models.md).
Legacy (pre-zip) files are left to `torch.load(weights_only=True)` by the caller.
"""

from __future__ import annotations

import io
import mmap
import os
import pickle
import struct
import zipfile
from collections import OrderedDict

import numpy as np
import torch

STORAGE_DTYPES = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "UntypedStorage": torch.uint8,
}
# Frameworks whose own classes (message hub, history buffers, config dicts) become inert stand-ins.
BOOKKEEPING_PACKAGES = ("mmengine", "mmcv", "mmseg", "mmdet", "mmpretrain", "mmcls")
NUMPY_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")  # numpy 1 and numpy 2 names
NUMPY_SCALAR_KINDS = "biufcSU"  # booleans, integers, floats, complex, byte and text strings: never objects
MAX_PICKLE_BYTES = 256 * 2**20  # the object tree without its tensors is kilobytes; a bigger one is hostile
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # zip local file header: signature ... name length, extra length


class PickleReadError(ValueError):
    """The file is damaged, or holds something other than data (the message names what)."""


class Bookkeeping:
    """A training framework's object (e.g. mmengine's HistoryBuffer) as data: its state, no code.

    `qualified_name` says which class it stood for; `state` is what pickle gave `__setstate__`,
    `items` what it stored into a dict- or list-like one."""

    qualified_name = "?"

    def __new__(cls, *args, **kwargs):  # pickle's NEWOBJ calls this without __init__
        obj = super().__new__(cls)
        obj.args, obj.state, obj.items = args, None, {}
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):
        self.items[key] = value

    def append(self, value):
        self.items[len(self.items)] = value

    def extend(self, values):
        for value in values:
            self.append(value)

    def __repr__(self) -> str:
        return f"<{self.qualified_name} (stand-in)>"


def _bookkeeping_class(module: str, name: str) -> type:
    return type(name, (Bookkeeping,), {"qualified_name": f"{module}.{name}", "__module__": __name__})


class NumpyDType:
    """`numpy.dtype(spec, align, copy)` plus its pickled state, kept as a spec string and byte order."""

    def __init__(self, spec, align=False, copy=False):
        if not isinstance(spec, str) or len(spec) > 16:
            raise PickleReadError(f"a numpy dtype of an unexpected kind {spec!r:.40}")
        self.spec, self.byteorder = spec, "="

    def __setstate__(self, state):
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags) for a plain dtype
        if isinstance(state, tuple) and len(state) >= 2 and state[1] in ("<", ">", "|", "="):
            self.byteorder = state[1]

    def to_numpy(self) -> np.dtype:
        try:
            dtype = np.dtype(self.spec)
        except TypeError as error:
            raise PickleReadError(f"an unknown numpy dtype '{self.spec}'") from error
        if dtype.kind not in NUMPY_SCALAR_KINDS:
            raise PickleReadError(f"a numpy value of dtype '{self.spec}', which is not plain data")
        return dtype.newbyteorder(self.byteorder) if self.byteorder in "<>" else dtype


def _numpy_scalar(dtype, data=None):
    """numpy's `multiarray.scalar(dtype, raw bytes)`: built here from the bytes as a numpy scalar."""
    if not isinstance(dtype, NumpyDType) or not isinstance(data, bytes):
        raise PickleReadError("a numpy scalar without a plain dtype and raw bytes")
    resolved = dtype.to_numpy()
    if len(data) != resolved.itemsize:
        raise PickleReadError(f"a numpy {dtype.spec} scalar of {len(data)} bytes")
    return np.frombuffer(data, dtype=resolved)[0]


class NumpyArray(Bookkeeping):
    """A numpy array (e.g. a HistoryBuffer's log) kept as its pickled state: nobody needs its values."""

    qualified_name = "numpy.ndarray"


def _numpy_reconstruct(subtype, shape=None, typecode=None):
    return NumpyArray()


def _latin1_bytes(text, encoding="latin1"):
    """`_codecs.encode(text, 'latin1')`: how pickle protocol 2 spells bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise PickleReadError("_codecs.encode called with something other than text and 'latin1'")
    return text.encode("latin1")


class StorageType:
    """A `torch.FloatStorage`-like global: only the dtype of the storages it names."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


def rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, *_):
    """torch's `_rebuild_tensor_v2`, checked: the tensor must lie inside its storage."""
    if not isinstance(storage, torch.Tensor):
        raise PickleReadError("a tensor without storage")
    if not (isinstance(offset, int) and isinstance(size, tuple) and isinstance(stride, tuple)
            and len(size) == len(stride) and all(isinstance(n, int) and n >= 0 for n in (offset, *size, *stride))):
        raise PickleReadError(f"a tensor with a malformed shape {size!r:.60} / stride {stride!r:.60}")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset - 1
    if last >= storage.numel():
        raise PickleReadError(f"a tensor of shape {tuple(size)} reaches past its storage")
    return storage.as_strided(size, stride, offset)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_):
    if not isinstance(data, torch.Tensor):
        raise PickleReadError("a parameter without a tensor")
    return data


def _allowed(module: str, name: str):
    """What a global of the file becomes, or None when it is not data."""
    fixed = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("_codecs", "encode"): _latin1_bytes,
        ("numpy", "dtype"): NumpyDType,
        ("numpy", "ndarray"): NumpyArray,
    }
    if (module, name) in fixed:
        return fixed[module, name]
    if module == "torch" and name in STORAGE_DTYPES:
        return StorageType(STORAGE_DTYPES[name])
    if module in NUMPY_CORE and name == "scalar":
        return _numpy_scalar
    if module in NUMPY_CORE and name == "_reconstruct":
        return _numpy_reconstruct
    if module.split(".")[0] in BOOKKEEPING_PACKAGES:
        return _bookkeeping_class(module, name)
    return None


class _DataUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, storage_at):
        super().__init__(io.BytesIO(data))
        self.storage_at = storage_at
        self.storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str):
        found = _allowed(module, name)
        if found is None:
            raise PickleReadError(f"it holds '{module}.{name}', which is not data (only tensors, containers, "
                                  "numpy scalars and training bookkeeping are read): refused, nothing was run")
        return found

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], StorageType) and isinstance(pid[2], str) and isinstance(pid[4], int)):
            raise PickleReadError(f"an unknown storage reference {pid!r:.80}")
        _, storage_type, key, _, numel = pid
        if key not in self.storages:
            self.storages[key] = self.storage_at(key, storage_type.dtype, numel)
        return self.storages[key]


def stored_entry(archive: zipfile.ZipFile, name: str, dtype: torch.dtype, numel: int) -> zipfile.ZipInfo:
    """The zip entry holding a storage's bytes, checked: present, uncompressed, exactly numel items long."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise PickleReadError(f"tensor data '{name}' is missing from the archive") from None
    itemsize = torch.empty(0, dtype=dtype).element_size()
    if info.compress_type != zipfile.ZIP_STORED or info.file_size != numel * itemsize:
        raise PickleReadError(f"tensor data '{name}' has {info.file_size} bytes, expected {numel} x {itemsize} "
                              "stored uncompressed")
    return info


class _MappedArchive:
    """The archive's storages as views of one private (copy-on-write) memory map: read on first touch."""

    def __init__(self, file, archive: zipfile.ZipFile, root: str):
        self.archive, self.root = archive, root
        self.size = os.fstat(file.fileno()).st_size
        self.map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY) if self.size else None

    def storage(self, key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        info = stored_entry(self.archive, f"{self.root}/data/{key}", dtype, numel)
        if numel == 0:
            return torch.empty(0, dtype=dtype)
        start = self._data_offset(info)
        if start + info.file_size > self.size:
            raise PickleReadError(f"tensor data '{info.filename}' reaches past the end of the file")
        return torch.frombuffer(self.map, dtype=dtype, count=numel, offset=start)

    def _data_offset(self, info: zipfile.ZipInfo) -> int:
        header = self.map[info.header_offset:info.header_offset + _LOCAL_HEADER.size]
        if len(header) != _LOCAL_HEADER.size:
            raise PickleReadError(f"the zip entry of '{info.filename}' is cut off")
        signature, name_length, extra_length = _LOCAL_HEADER.unpack(header)
        if signature != b"PK\x03\x04":
            raise PickleReadError(f"the zip entry of '{info.filename}' is damaged")
        return info.header_offset + _LOCAL_HEADER.size + name_length + extra_length


def archive_root(names: list[str]) -> str:
    roots = [n[: -len("/data.pkl")] for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(roots) != 1:
        raise PickleReadError("not a torch checkpoint archive (no single <root>/data.pkl)")
    return roots[0]


def read_torch_checkpoint(path: str | os.PathLike):
    """The object a zip-format `torch.save` file holds, read as data: tensors are memory-mapped views.

    Raises `PickleReadError` naming the first global that is not data, or what is damaged."""
    try:
        with open(path, "rb") as file, zipfile.ZipFile(file) as archive:
            names = archive.namelist()
            root = archive_root(names)
            if f"{root}/byteorder" in names and archive.read(f"{root}/byteorder").strip() != b"little":
                raise PickleReadError("its tensors are stored big-endian, which is not supported")
            info = archive.getinfo(f"{root}/data.pkl")
            if info.file_size > MAX_PICKLE_BYTES:
                raise PickleReadError(f"its object tree is {info.file_size} bytes, far more than any checkpoint's")
            mapped = _MappedArchive(file, archive, root)
            return _DataUnpickler(archive.read(info), mapped.storage).load()
    except PickleReadError:
        raise
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, RecursionError, MemoryError, OverflowError, struct.error) as error:
        raise PickleReadError(f"damaged ({type(error).__name__}: {error})") from error
