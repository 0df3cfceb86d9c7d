"""Where a command writes: checked before any work, and never at the cost of a user's file.

- An output place must be a folder we can create and write (not a file, not under a file, not
  read-only): `check_output_folder` says what is wrong before any image is decoded.
- An output that is one of the inputs is refused always, with or without --overwrite.
- The PNGs `pal detect` and `pal fix` write carry which input they were made from (a text chunk with
  a hash of its absolute path: outputs shared with others do not reveal where files live), so a
  re-run can tell its own finished outputs (skip them: resume) from a user's file of the same name
  (refuse, unless --overwrite).
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

from PIL import Image

from .atomic import temporary_name

MADE_FROM_KEY = "pal:made-from"  # PNG text chunk: a hash of the absolute path of the input


def _source_digest(source: Path) -> str:
    return hashlib.blake2b(str(Path(source).resolve()).encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()


def made_from_text(source: Path) -> dict[str, str]:
    return {MADE_FROM_KEY: _source_digest(source)}


def made_from(path: Path) -> str | None:
    """The digest of the input a PNG of ours was made from (its text chunk), or None for any other file."""
    return png_text_value(path, MADE_FROM_KEY)


def png_text_value(path: Path, key: str) -> str | None:
    """One text chunk of a PNG, or None (no such chunk, or not a readable PNG)."""
    try:
        with Image.open(path) as image:
            return (getattr(image, "text", None) or {}).get(key)
    except Exception:  # anything that is not a readable PNG of ours is someone else's file
        return None


def is_output_of(path: Path, source: Path) -> bool:
    return made_from(path) == _source_digest(source)


def same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def outputs_that_are_inputs(outputs: dict[Path, list[Path]]) -> list[str]:
    """Problems for every planned output that is (or links to) one of the inputs: never allowed."""
    inputs = {p.resolve(): p for p in outputs}
    problems = []
    for source, paths in outputs.items():
        for path in paths:
            resolved = path.resolve()
            hit = inputs.get(resolved)
            if hit is None and path.exists():
                hit = next((p for p in outputs if same_file(p, path)), None)
            if hit is not None:
                problems.append(f"{path} would replace the input {hit}; choose an --out folder that holds no inputs")
    return problems


def check_output_folder(folder: Path, what: str = "--out") -> str | None:
    """Why `folder` cannot take our outputs (not a folder, under a file, read-only), or None.

    Creates nothing: an existing folder gets one temporary file written and removed; for a folder
    still to be made, its nearest existing parent must be a writable folder.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        return f"{what} {folder} is a file, not a folder"
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        return f"{what} {folder} cannot be made: {existing} is a file"
    if existing != folder:
        return None if os.access(existing, os.W_OK | os.X_OK) else (
            f"{what} {folder} cannot be made: {existing} is not writable")
    try:
        probe = temporary_name(folder / "write-test")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        return f"{what} {folder} is not writable ({describe_os_error(error)})"
    return None


def check_output_file(path: Path, what: str) -> str | None:
    """Why a single output file cannot be written at `path` (its folder's problems), or None."""
    path = Path(path)
    if path.is_dir():
        return f"{what} {path} is a folder; give a file name"
    return check_output_folder(path.parent, f"the folder of {what}")


def describe_os_error(error: OSError) -> str:
    reasons = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
               errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied", errno.ENOTDIR: "a part of the path is a file",
               errno.EISDIR: "it is a folder", errno.ENAMETOOLONG: "the name is too long"}
    reason = reasons.get(error.errno, error.strerror or type(error).__name__)
    return f"{reason}: {error.filename}" if error.filename else reason


def is_fatal_write_error(error: OSError) -> bool:
    """A write error that will hit every later output as well: stop instead of trying each image."""
    return error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
