"""`pal download`: fetches a catalogue model from its authors' link. The only module that uses the network.

The transfer is gdown's (an optional extra: `pip install 'pal-nodes[download]'`), which knows
Google Drive's ways: the "can't scan this file for viruses" confirmation page, redirects, resuming a
partial file with a byte range, retrying a dropped connection. Around it we add what makes the file
safe to use: the bytes land in a hidden partial file beside the target (kept when the transfer
stops, so a re-run resumes), a web page where the file should be is recognised, and the file is
installed only once it converts to the expected network (`installing.install_file`).
"""

from __future__ import annotations

import errno
import os
import sys
import urllib.parse
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from ..outputs import check_output_folder
from . import catalogue, model_store
from .checkpoint import CheckpointError
from .installing import InstallError, install_file

RETRIES = 3  # reconnections within one run when the connection drops (each resumes where it stopped)
TIMEOUT = (20, 120)  # seconds: to connect, and between bytes
ProgressCallback = Callable[[int, "int | None"], None]


class DownloadError(RuntimeError):
    """A download that did not give an installable file; the message says why and what to do."""


def download_model(name: str, folder: str | os.PathLike | None = None, *, overwrite: bool = False,
                   show_progress: bool = True, progress: ProgressCallback | None = None) -> Path:
    """Downloads catalogue model `name`, verifies and converts it, and returns the installed file.

    An installed model is returned as it is unless `overwrite`. `progress(bytes_done, bytes_total)`
    is called as the bytes arrive (the total is None when the server does not say).
    """
    entry = catalogue.get(name)
    if not entry.downloadable:
        raise DownloadError(f"{name} is shipped with the pack: there is nothing to download")
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
        _fetch(entry, partial, show_progress, progress)
        return _install(entry, partial, folder)


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


def _install(entry: catalogue.CatalogueEntry, partial: Path, folder: Path) -> Path:
    """Checks the downloaded file and installs it; a file with the wrong content is deleted."""
    name = entry.name
    try:
        _refuse_web_page(partial, entry)
        origin = f"{entry.origin}; downloaded from {_source_link(entry)}"
        extra = {"download": {"url": _source_link(entry), "bytes": partial.stat().st_size,
                              "sha256": model_store.sha256_of(partial)}}
        installed = install_file(partial, name, folder, origin=origin, extra=extra, overwrite=True)
    except (CheckpointError, InstallError) as error:
        partial.unlink(missing_ok=True)  # wrong or damaged content: the next run starts clean
        raise DownloadError(f"the file downloaded for {name} was refused and deleted: {error}. If this "
                            f"repeats, fetch {entry.page} in a browser and run `pal models add FILE --name {name}`"
                            ) from error
    partial.unlink(missing_ok=True)
    return installed


def _source_link(entry: catalogue.CatalogueEntry) -> str:
    return entry.url or f"https://drive.google.com/uc?id={entry.drive_id}"


def _fetch(entry: catalogue.CatalogueEntry, partial: Path, show_progress: bool,
           progress: ProgressCallback | None) -> None:
    """Transfers the file to `partial`, resuming a part left by an earlier run."""
    try:
        import gdown
        import requests
    except ImportError as error:
        raise DownloadError(f"downloading needs gdown: pip install 'pal-nodes[download]' (or fetch {entry.page} "
                            f"in a browser and run `pal models add FILE --name {entry.name}`)") from error
    already = _received(partial)
    bar = tqdm(desc=entry.name, unit="B", unit_scale=True, unit_divisor=1024, initial=already,
               total=entry.approx_bytes, disable=not show_progress, file=sys.stderr, dynamic_ncols=True)

    def report(done: int, total: int | None) -> None:
        if total is not None and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)
        if progress is not None:
            progress(done, total)

    link = _source_link(entry)
    host = urllib.parse.urlsplit(link).hostname
    by_hand = f"open {entry.page} in a browser and run `pal models add FILE --name {entry.name}`"
    try:
        source = {"url": entry.url} if entry.url else {"id": entry.drive_id}
        gdown.download(**source, output=str(partial), quiet=True, resume=True, progress=report,
                       use_cookies=False, retries=RETRIES, timeout=TIMEOUT)
    except gdown.exceptions.FileURLRetrievalError as error:
        reason = " ".join(str(error).split())[:200]
        raise DownloadError(f"Google Drive would not hand out {entry.name} ({reason}). Drive often refuses "
                            f"scripted downloads of popular files for a while: {by_hand}") from error
    except requests.exceptions.HTTPError as error:
        raise DownloadError(f"{host} answered {error.response.status_code} for {entry.name}; try again later, "
                            f"or {by_hand}") from error
    except (requests.exceptions.ConnectionError, gdown.exceptions.DownloadError) as error:
        # gdown reports a connection that failed on every retry as its DownloadError, caused by requests'
        unreachable = error if isinstance(error, requests.exceptions.ConnectionError) else error.__cause__
        if isinstance(unreachable, requests.exceptions.ConnectionError) and not _received(partial):
            cause = "DNS lookup failed" if _is_dns_failure(unreachable) else "no connection"
            raise DownloadError(f"could not reach {host} ({cause}: is this machine online?); run again when it is, "
                                f"or {by_hand}") from error
        raise DownloadError(f"the download of {entry.name} stopped ({_first_line(error)}); the bytes received are "
                            "kept: run the same command again to resume") from error
    except requests.exceptions.RequestException as error:
        raise DownloadError(f"the download of {entry.name} failed ({_first_line(error)}); run again to resume, "
                            f"or {by_hand}") from error
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise DownloadError(f"the disk holding {partial.parent} is full: {entry.name} needs about "
                                f"{(entry.approx_bytes or 0) / 1e9:.1f} GB; free some space or choose --dir, then "
                                "run again (the part received is kept)") from error
        raise DownloadError(f"could not write to {partial.parent} ({error.strerror or error})") from error
    finally:
        bar.close()


def _received(partial: Path) -> int:
    """Bytes already on disk: gdown keeps them in `<partial name><8 characters>.part`."""
    return sum(p.stat().st_size for p in partial.parent.glob(f"{partial.name}*.part"))


def received_bytes(name: str, folder: str | os.PathLike | None = None) -> int:
    """Bytes of model `name` received by a download that stopped (0 when none is waiting to resume)."""
    folder = Path(folder) if folder is not None else model_store.install_folder()
    return _received(folder / f".{name}.download")


def _refuse_web_page(path: Path, entry: catalogue.CatalogueEntry) -> None:
    """A web page (Drive's quota, sign-in or error pages) saved where the checkpoint should be."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head:
        raise DownloadError(f"the server sent an empty file for {entry.name}; run again later")
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html")) or (text.startswith(b"<") and b"<html" in text):
        path.unlink(missing_ok=True)
        quota = b"quota" in text or b"too many users" in text
        why = "Google Drive's download quota for this file is used up" if quota else "a web page came back"
        raise DownloadError(f"{why}, not the model file, and it was deleted. Drive often refuses scripted "
                            f"downloads for a while: open {entry.page} in a browser and run "
                            f"`pal models add FILE --name {entry.name}`")


def _is_dns_failure(error: Exception) -> bool:
    text = repr(error)
    return any(s in text for s in ("NameResolutionError", "getaddrinfo", "Name or service not known",
                                   "nodename nor servname", "Temporary failure in name resolution"))


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
