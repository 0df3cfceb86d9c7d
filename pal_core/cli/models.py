"""`pal models`: the model catalogue, installed or not; `--verify` re-checks checksums; `add` installs a file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..hub import catalogue, model_store
from ..hub.download import received_bytes
from ..hub.model_store import locate_model
from ..outputs import describe_os_error
from .console import terminal_text
from .download import say_where_it_loads_from


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "models", help="list the model catalogue (installed or not); add a file fetched by hand",
        description="Lists the catalogue models (the official PAL4VST checkpoints and the shipped pal-lite) and "
                    "any other installed model: installed or not, where, size. Models are installed in "
                    f"${model_store.HOME_ENV}/models, else the user data folder ({model_store.home_folder()}), "
                    "or ComfyUI's models/pal4vst inside ComfyUI.")
    parser.add_argument("--verify", action="store_true",
                        help="re-hash every installed model and compare with the sha256 recorded at install")
    parser.add_argument("--json", action="store_true", help="one JSON object per model instead of a table")
    actions = parser.add_subparsers(dest="models_command", metavar="add")
    add = actions.add_parser(
        "add", help="install a checkpoint you downloaded by hand",
        description="Checks the file (it must convert to the model's architecture: every key and shape), "
                    "converts it to .safetensors in the models folder and records its sha256.")
    add.add_argument("file", type=Path, help="the downloaded checkpoint: an mmseg .pth (as mmcv/mmengine saved it, "
                                             "optimizer state and all), its TorchScript export, or our .safetensors")
    add.add_argument("--name", help=f"catalogue name ({', '.join(n for n in catalogue.names() if n != catalogue.FALLBACK)}) "
                                    "or a name of your own; default: guessed from the file name")
    add.add_argument("--dir", type=Path, help=f"install here instead of {model_store.install_folder()}")
    add.add_argument("--overwrite", action="store_true", help="replace an installed model of that name")
    add.set_defaults(func=run_add)
    parser.set_defaults(func=run_list)


def _installed_rows() -> list[dict]:
    rows = []
    for entry in catalogue.entries():
        path = locate_model(entry.name)
        status = "shipped" if entry.shipped else ("installed" if path else "not installed")
        row = {"name": entry.name, "status": status, "path": str(path) if path else None,
               "bytes": path.stat().st_size if path else None, "purpose": entry.purpose, "link": entry.page}
        if path is None and entry.downloadable:  # the authors publish no sizes: the range a download may have
            row["download_bytes"] = list(entry.download_bytes) if entry.download_bytes else None
        if status == "not installed" and (received := received_bytes(entry.name)):
            row["received_bytes"] = received  # a stopped download that `pal download` resumes
        rows.append(row)
    known = {row["path"] for row in rows}
    for folder in model_store.model_folders():
        for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
            if str(path) in known or path.name.startswith("."):
                continue
            if not path.is_file():  # a dangling link, a folder, a FIFO (reading it would wait forever)
                rows.append({"name": path.stem, "status": "not a file", "path": str(path), "bytes": None,
                             "purpose": f"{_what_it_is(path)} named like a model, not a model: remove it or "
                                        "install a model with `pal models add`", "link": None})
                continue
            rows.append({"name": path.stem, "status": "installed", "path": str(path),
                         "bytes": path.stat().st_size, "purpose": "installed with `pal models add`", "link": None})
    return rows


def _what_it_is(path: Path) -> str:
    if path.is_symlink() and not path.exists():
        return "a link to a missing file"
    return "a folder" if path.is_dir() else "a special file (not a regular file)"


def run_list(args: argparse.Namespace) -> int:
    try:
        rows = _installed_rows()
    except ValueError as error:  # a bad $PAL_CATALOGUE
        print(f"pal models: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a models folder that cannot be read
        print(f"pal models: cannot read the models folders ({describe_os_error(error)})", file=sys.stderr)
        return 2
    failed = 0
    for row in rows:
        if args.verify and row["status"] == "installed":
            check = model_store.verify(Path(row["path"]))
            row["verified"] = check.ok
            row["verify"] = check.message
            failed += not check.ok
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        _print_table(rows)
    if failed:
        print(f"pal models: {failed} installed model(s) failed verification", file=sys.stderr)
    return 1 if failed else 0


def _print_table(rows: list[dict]) -> None:
    width = max(len(r["name"]) for r in rows)
    for row in rows:
        size = _size(row["bytes"]) if row["bytes"] is not None else _download_size(row.get("download_bytes"))
        where = row["path"] or f"get it: pal download {row['name']}"
        if row.get("received_bytes"):
            where += f" (resumes: {_size(row['received_bytes'])} received)"
        # file names in a models folder are anyone's text: shown with control characters escaped
        print(terminal_text(f"{row['name']:<{width}}  {row['status']:<13}  {size:>9}  {where}", newline=None))
        print(terminal_text(f"{'':<{width}}  {row['purpose']}", newline=None))
        if "verify" in row:
            print(f"{'':<{width}}  verify: {'ok' if row['verified'] else 'FAILED'}: {row['verify']}")
    print(f"models folder: {model_store.install_folder()}")


def _size(count: int) -> str:
    return f"{count / 1e6:.0f} MB" if count >= 1e6 else f"{count / 1e3:.0f} kB"


def _download_size(span: list | None) -> str:
    """A download's size before it starts: a range (the server says the exact length), or unknown."""
    return f"{span[0] / 1e9:.1f}-{span[1] / 1e9:.1f} GB" if span else "unknown"


def guess_name(file: Path) -> str | None:
    """The catalogue name a downloaded file's name points to (the authors' files carry the task's name)."""
    lowered = file.name.lower()
    hints = {"unified": "pal4vst-unified", "stylegan": "pal4vst-stylegan2", "shadow": "pal4vst-shadow"}
    found = {name for hint, name in hints.items() if hint in lowered}
    return found.pop() if len(found) == 1 else None


def run_add(args: argparse.Namespace) -> int:
    from ..hub.checkpoint import CheckpointError  # needs torch: not imported for listing
    from ..hub.installing import InstallError, install_file
    from ..hub.loading import ModelNotFoundError
    name = args.name or guess_name(args.file)
    if name is None:
        print(f"pal models add: which model is {args.file.name}? Pass --name (e.g. --name pal4vst-unified)",
              file=sys.stderr)
        return 2
    if not args.file.is_file():
        print(f"pal models add: {args.file}: no such file", file=sys.stderr)
        return 2
    try:
        added = {"file": args.file.name, "bytes": args.file.stat().st_size, "sha256": model_store.sha256_of(args.file)}
        path = install_file(args.file, name, args.dir, origin=_origin(name, args.file), extra={"added": added},
                            overwrite=args.overwrite,
                            say=lambda line: print(f"pal models add: {line}", file=sys.stderr, flush=True))
    except (InstallError, CheckpointError, ModelNotFoundError, FileExistsError, ValueError) as error:
        print(f"pal models add: {error}", file=sys.stderr)
        return 2
    print(f"installed {name}: {path} (sha256 recorded in {model_store.checksum_path(path).name})")
    say_where_it_loads_from(name, args.dir or model_store.install_folder(), path)
    return 0


def _origin(name: str, file: Path) -> str:
    entry = catalogue.find(name)
    prefix = f"{entry.origin}; " if entry is not None else ""
    return f"{prefix}added by hand from {file.name}"
