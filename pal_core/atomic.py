"""Writing a file so that its final name only ever holds a complete file.

`atomic_path(path)` hands out a temporary name beside `path` (same folder, so the rename never
crosses file systems); when the block ends without an error the temporary file is flushed to disk
(fsync) and renamed into place, else it is removed. Readers and crashes see either the old file or
the new one, never half of one. Without `overwrite` an existing file is never replaced, not even one
another process created while this one was writing (the temporary file is hard-linked into place,
which fails when the name is taken).

Temporary files are named `.<name>.<pid>.<token>.pal-tmp`. A process killed while writing leaves
one behind; `remove_stale_temporaries(folder)` deletes those whose process is gone.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_SUFFIX = ".pal-tmp"
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.pal-tmp$")


def exists_message(path: Path) -> str:
    return f"{path} already exists; pass --overwrite (overwrite=True) to replace it"


def temporary_name(path: Path) -> Path:
    """A fresh temporary name beside `path`, unique per process and call."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


@contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yields a temporary path to write `path`'s content to; moves it into place when the block succeeds.

    The writer may be anything that takes a path (torch.save, Pillow, safetensors, open()).
    With `overwrite=False` a FileExistsError is raised, before and after the writing, when `path` exists.
    """
    path = Path(path)
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(exists_message(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        _fsync_file(tmp)
        # What open() would give (0666 less the umask): some writers (safetensors) create their file 0600,
        # which would hide a model or an image from the user's other accounts and services.
        os.chmod(tmp, 0o666 & ~_umask())
        if overwrite:
            os.replace(tmp, path)
        else:
            _move_without_replacing(tmp, path)
        _fsync_folder(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = True) -> Path:
    with atomic_path(path, overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, overwrite: bool = True) -> Path:
    return write_bytes(path, text.encode("utf-8"), overwrite)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Deletes the temporary files in `folder` (not below it) left by writers that no longer run."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in os.scandir(folder):
        match = _TEMP_NAME.match(entry.name)
        if match and entry.is_file(follow_symlinks=False) and not _process_alive(int(match["pid"])):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except OSError:  # someone else's process, or a pid we cannot ask about
        return True
    return True


def _move_without_replacing(tmp: Path, path: Path) -> None:
    try:
        os.link(tmp, path)  # atomic, and fails if `path` appeared meanwhile
    except FileExistsError:
        raise FileExistsError(exists_message(path)) from None
    except OSError:  # a file system without hard links: check, then rename
        if os.path.lexists(path):
            raise FileExistsError(exists_message(path)) from None
        os.replace(tmp, path)


def _umask() -> int:
    """The process's umask, read without changing it where the platform says (Linux), else by setting it back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_folder(folder: Path) -> None:
    """Makes the rename itself durable; not every platform lets a folder be opened for this."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
