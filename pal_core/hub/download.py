"""`pal download`: fetches a catalogue model from its authors' link. The only module that uses the network.

The transfer is gdown's (a core dependency, so ComfyUI-Manager installs it with the pack), which
knows Google Drive's ways: the "can't scan this file for viruses" confirmation page, redirects,
resuming a partial file with a byte range, retrying a dropped connection. Around it we add what
makes the file safe to use: the bytes land in a hidden partial file beside the target (kept when
the transfer stops, so a re-run resumes; discarded, with a line saying so, when the server cannot
continue it or the file changed), a stall timeout, a size cap, a disk check against the length the
server announces, a web page where the file should be is recognised, and the file is installed
only once it converts to the expected network (`installing.install_file`). When the `.pth` cannot
be used, the TorchScript export of the same model is tried (its weights read as data).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import urllib.parse
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from .. import atomic
from ..outputs import check_output_folder
from . import catalogue, model_store

RETRIES = 3  # reconnections within one run when the connection drops (each resumes where it stopped)
STALL_SECONDS = 30  # a server that sends nothing for this long has stalled: reconnect, then give up
TIMEOUT = (20, STALL_SECONDS)  # seconds: to connect, and between bytes (read at call time: tests shorten it)
MAX_DOWNLOAD_BYTES = 4 * 10**9  # the official files are 0.5-1.5 GB: more than this is not a PAL4VST checkpoint
ProgressCallback = Callable[[int, "int | None"], None]
Say = Callable[[str], None]


class DownloadError(RuntimeError):
    """A download that did not give an installable file; the message says why and what to do."""


class UnusableFileError(DownloadError):
    """The server handed out something, but not a file that installs (refused content, a web page,
    Drive declining): the TorchScript export of the same model may still do."""


class _CannotResume(Exception):
    """The part received earlier cannot be continued (says why): it is discarded and the transfer restarts."""


def download_model(name: str, folder: str | os.PathLike | None = None, *, overwrite: bool = False,
                   show_progress: bool = True, progress: ProgressCallback | None = None,
                   say: Say | None = None, by_hand: str | None = None) -> Path:
    """Downloads catalogue model `name`, verifies and converts it, and returns the installed file.

    An installed model is returned as it is unless `overwrite`, which also discards a part received
    earlier. `progress(bytes_done, bytes_total)` is called as the bytes arrive (the total is None
    when the server does not say); `say(line)` is told what happens besides (fallbacks, restarts,
    the conversion after the transfer). `by_hand` is the advice for fetching the file in a browser
    (default: `by_hand_advice`, for the `pal` command; the node pack gives its own).
    """
    entry = catalogue.get(name)
    if not entry.downloadable:
        raise DownloadError(f"{name} is shipped with the pack: there is nothing to download")
    say = say or (lambda message: None)
    by_hand = by_hand or by_hand_advice(entry)
    folder = Path(folder) if folder is not None else model_store.install_folder()
    target = folder / entry.file_name
    if target.is_file() and not overwrite:
        return target
    if (problem := check_output_folder(folder, "the models folder")) is not None:  # before any byte is fetched
        raise DownloadError(f"{problem}; choose another folder with --dir")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DownloadError(f"cannot create {folder} ({error.strerror}); choose another folder with --dir") from error

    partial = folder / f".{name}.download"  # received_bytes() finds it by this name
    with _only_download_of(partial):
        if overwrite:
            _discard(partial)
        try:
            return _download_file(entry, _pth_source(entry), partial, folder, show_progress, progress, say, by_hand)
        except UnusableFileError as error:
            if entry.torchscript_source is None:
                raise
            say(f"{error}; trying the authors' TorchScript export of the same model instead (its weights are "
                "read as data, its program is never run)")
            export = folder / f".{name}.torchscript.download"
            try:
                return _download_file(entry, entry.torchscript_source, export, folder, show_progress, progress, say,
                                      by_hand)
            except UnusableFileError as fallback_error:
                raise DownloadError(f"neither file of {name} could be used. The .pth: {error}. Its TorchScript "
                                    f"export: {fallback_error}") from fallback_error


def by_hand_advice(entry: catalogue.CatalogueEntry) -> str:
    return f"open {entry.page} in a browser and run `pal models add FILE --name {entry.name}`"


def _pth_source(entry: catalogue.CatalogueEntry) -> dict:
    return {"url": entry.url} if entry.url else {"id": entry.drive_id}


def _link(source: dict) -> str:
    return source.get("url") or f"https://drive.google.com/uc?id={source['id']}"


def _download_file(entry: catalogue.CatalogueEntry, source: dict, partial: Path, folder: Path, show_progress: bool,
                   progress: ProgressCallback | None, say: Say, by_hand: str) -> Path:
    """Fetches one file (restarting once when a part left by an earlier run cannot be continued) and installs it."""
    try:
        _fetch(entry, source, partial, show_progress, progress, by_hand)
    except _CannotResume as reason:
        say(f"{reason}: the {_received(partial) / 1e6:.0f} MB received earlier were discarded and the download "
            "starts again from the beginning")
        _discard(partial)
        try:
            _fetch(entry, source, partial, show_progress, progress, by_hand)
        except _CannotResume as again:
            raise DownloadError(f"the download of {entry.name} could not be completed ({again}); run again later"
                                ) from again
    return _install(entry, source, partial, folder, say, by_hand)


@contextmanager
def _only_download_of(partial: Path):
    """Two downloads appending to one partial file would corrupt it: the second one is refused."""
    path = partial.with_name(partial.name + ".lock")
    with open(path, "ab") as lock:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; one download at a time is up to the user
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise DownloadError(f"another download into {partial.parent} is fetching this model; wait for it "
                                    "to finish") from None
        try:
            yield
        finally:
            path.unlink(missing_ok=True)  # still holding the lock: no other run can have taken it


def _install(entry: catalogue.CatalogueEntry, source: dict, partial: Path, folder: Path, say: Say,
             by_hand: str) -> Path:
    """Checks the downloaded file and installs it; a file with the wrong content is deleted."""
    from .checkpoint import CheckpointError  # needs torch: imported here so that `pal models` starts fast
    from .installing import InstallError, install_file, is_disk_full
    name, link = entry.name, _link(source)
    try:
        _refuse_web_page(partial, entry, by_hand)
        origin = f"{entry.origin}; downloaded from {link}"
        extra = {"download": {"url": link, "bytes": partial.stat().st_size, "sha256": model_store.sha256_of(partial)}}
        installed = install_file(partial, name, folder, origin=origin, extra=extra, overwrite=True, say=say)
    except (CheckpointError, InstallError) as error:
        if is_disk_full(error.__cause__) or "disk holding" in str(error):
            raise DownloadError(f"{error} (the downloaded file is kept: run the same command again)") from error
        _discard(partial)  # wrong or damaged content: the next run starts clean
        raise UnusableFileError(f"the file downloaded for {name} was refused and deleted: {error}. If this "
                                f"repeats, {by_hand}") from error
    _discard(partial)
    return installed


def _discard(partial: Path) -> None:
    """The downloaded file, the parts of a stopped transfer, and what was recorded about them."""
    partial.unlink(missing_ok=True)
    _record_path(partial).unlink(missing_ok=True)
    for part in partial.parent.glob(f"{partial.name}*.part"):
        part.unlink(missing_ok=True)


def _record_path(partial: Path) -> Path:
    return partial.with_name(partial.name + ".json")


class _TransferChecks:
    """Checks made as the bytes arrive: the size cap, the free space, and whether a part left by an
    earlier run belongs to the file the server has now (same link, same length)."""

    def __init__(self, entry: catalogue.CatalogueEntry, partial: Path, link: str):
        self.entry, self.partial, self.link = entry, partial, link
        self.total: int | None = None

    def __call__(self, done: int, total: int | None) -> None:
        if total is not None and self.total is None:
            self.total = total
            self._check_partial(total)
            self._check_size(total)
            self._check_space(done, total)
        if done > MAX_DOWNLOAD_BYTES:
            self._check_size(done)

    def _check_partial(self, total: int) -> None:
        record = _record_path(self.partial)
        try:
            before = json.loads(record.read_text())
        except (OSError, ValueError):
            before = None
        if _received(self.partial) and isinstance(before, dict) and before != {"link": self.link, "bytes": total}:
            raise _CannotResume(f"the file at {self.link} is no longer the one a part was received of "
                                f"({total} bytes now, {before.get('bytes')} before)")
        atomic.write_text(record, json.dumps({"link": self.link, "bytes": total}))

    def _check_size(self, size: int) -> None:
        if size > MAX_DOWNLOAD_BYTES:
            raise _TooBig(f"the server sends {size / 1e9:.1f} GB for {self.entry.name}, more than any PAL4VST "
                          f"checkpoint ({MAX_DOWNLOAD_BYTES / 1e9:.0f} GB at most): refused")

    def _check_space(self, done: int, total: int) -> None:
        converted = self.entry.converted_bytes or total  # a converted model holds at most the file's weights
        needed = (total - done) + converted
        free = shutil.disk_usage(self.partial.parent).free
        if free < needed:
            raise DownloadError(
                f"not enough space in {self.partial.parent}: {self.entry.name} needs {needed / 1e9:.2f} GB "
                f"({(total - done) / 1e9:.2f} GB still to download, {converted / 1e9:.2f} GB converted) and "
                f"{free / 1e9:.2f} GB are free; free some space or choose --dir, then run again"
                + (" (the part received is kept)" if done else ""))


class _TooBig(DownloadError):
    pass


def _fetch(entry: catalogue.CatalogueEntry, source: dict, partial: Path, show_progress: bool,
           progress: ProgressCallback | None, by_hand: str) -> None:
    """Transfers the file to `partial`, resuming a part left by an earlier run."""
    try:
        import gdown
        import requests
    except ImportError as error:  # a core dependency: only a broken environment lacks it
        raise DownloadError(f"downloading needs the gdown package, which is missing from this Python environment "
                            f"({error}); reinstall the pack's requirements, or {by_hand}") from error
    already = _received(partial)
    low, high = entry.download_bytes or (None, None)
    bar = tqdm(desc=entry.name, unit="B", unit_scale=True, unit_divisor=1000, initial=already,
               total=high, disable=not show_progress, file=sys.stderr, dynamic_ncols=True)
    link = _link(source)
    checks = _TransferChecks(entry, partial, link)

    def report(done: int, total: int | None) -> None:
        checks(done, total)
        if total is not None and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)
        if progress is not None:
            progress(done, total)

    host = urllib.parse.urlsplit(link).hostname
    try:
        gdown.download(**source, output=str(partial), quiet=True, resume=True, progress=report,
                       use_cookies=False, retries=RETRIES, timeout=TIMEOUT)
    except _TooBig as error:
        _discard(partial)
        raise UnusableFileError(str(error)) from None
    except gdown.exceptions.FileURLRetrievalError as error:
        reason = " ".join(str(error).split())[:200]
        raise UnusableFileError(f"Google Drive would not hand out {entry.name} ({reason}). Drive often refuses "
                                f"scripted downloads of popular files for a while: {by_hand}") from error
    except requests.exceptions.HTTPError as error:
        raise DownloadError(f"{host} answered {error.response.status_code} for {entry.name}; try again later, "
                            f"or {by_hand}") from error
    except (requests.exceptions.RequestException, gdown.exceptions.DownloadError) as error:
        if "did not honor the requested byte range" in str(error):
            raise _CannotResume(f"{host} cannot continue the part received earlier (no byte ranges, or the "
                                "file changed)") from error
        if _is_stall(error):
            received = _received(partial)
            raise DownloadError(f"{host} stopped sending {entry.name} (nothing for {TIMEOUT[1]} s, "
                                f"{received / 1e6:.0f} MB received); "
                                + ("the bytes received are kept: run the same command again to resume"
                                   if received else f"try again later, or {by_hand}")) from error
        # gdown reports a connection that failed on every retry as its DownloadError, caused by requests'
        unreachable = error if isinstance(error, requests.exceptions.ConnectionError) else error.__cause__
        if isinstance(unreachable, requests.exceptions.ConnectionError) and not _received(partial):
            cause = "DNS lookup failed" if _is_dns_failure(unreachable) else "no connection"
            raise DownloadError(f"could not reach {host} ({cause}: is this machine online?); run again when it is, "
                                f"or {by_hand}") from error
        if isinstance(error, requests.exceptions.RequestException) and not isinstance(
                error, requests.exceptions.ConnectionError):
            raise DownloadError(f"the download of {entry.name} failed ({_first_line(error)}); run again to resume, "
                                f"or {by_hand}") from error
        raise DownloadError(f"the download of {entry.name} stopped ({_first_line(error)}); the bytes received are "
                            "kept: run the same command again to resume") from error
    except OSError as error:
        if error.errno == errno.ENOSPC:
            size = f"{checks.total / 1e9:.2f} GB" if checks.total else (
                f"{low / 1e9:.1f}-{high / 1e9:.1f} GB" if low else "an unknown size")
            raise DownloadError(f"the disk holding {partial.parent} is full: the file of {entry.name} is {size}, "
                                "and the converted model needs room beside it; free some space or choose --dir, "
                                "then run again (the part received is kept)") from error
        raise DownloadError(f"could not write to {partial.parent} ({error.strerror or error})") from error
    finally:
        bar.close()


def _is_stall(error: BaseException) -> bool:
    """A read timeout anywhere in the chain (requests reports one inside a body as a ConnectionError)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        text = repr(error)
        if "ReadTimeout" in text or "Read timed out" in text:
            return True
        error = error.__cause__ or error.__context__
    return False


def _received(partial: Path) -> int:
    """Bytes already on disk: gdown keeps them in `<partial name><8 characters>.part`."""
    return sum(p.stat().st_size for p in partial.parent.glob(f"{partial.name}*.part"))


def received_bytes(name: str, folder: str | os.PathLike | None = None) -> int:
    """Bytes of model `name` received by a download that stopped (0 when none is waiting to resume)."""
    folder = Path(folder) if folder is not None else model_store.install_folder()
    return _received(folder / f".{name}.download")


def _refuse_web_page(path: Path, entry: catalogue.CatalogueEntry, by_hand: str) -> None:
    """A web page (Drive's quota, sign-in or error pages) saved where the checkpoint should be."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head:
        _discard(path)
        raise UnusableFileError(f"the server sent an empty file for {entry.name}; run again later")
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html")) or (text.startswith(b"<") and b"<html" in text):
        _discard(path)
        quota = b"quota" in text or b"too many users" in text
        why = "Google Drive's download quota for this file is used up" if quota else "a web page came back"
        raise UnusableFileError(f"{why}, not the model file, and it was deleted. Drive often refuses scripted "
                                f"downloads for a while: {by_hand}")


def _is_dns_failure(error: Exception) -> bool:
    text = repr(error)
    return any(s in text for s in ("NameResolutionError", "getaddrinfo", "Name or service not known",
                                   "nodename nor servname", "Temporary failure in name resolution"))


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
