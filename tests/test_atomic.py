"""The one atomic-write helper: a final name holds the old file or the whole new one, never a part."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap

import pytest
import torch

from pal_core import atomic


def test_write_replaces_only_after_the_writer_finished(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(path) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("writer crashed")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]  # the temporary file is gone
    atomic.write_text(path, "new")
    assert path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_without_overwrite_an_existing_file_is_kept(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(b"user's file")
    with pytest.raises(FileExistsError, match="already exists"):
        atomic.write_bytes(path, b"ours", overwrite=False)
    assert path.read_bytes() == b"user's file"


def test_a_file_that_appears_while_writing_is_not_replaced(tmp_path):
    path = tmp_path / "a.png"
    with pytest.raises(FileExistsError):
        with atomic.atomic_path(path, overwrite=False) as tmp:
            tmp.write_bytes(b"ours")
            path.write_bytes(b"another process")
    assert path.read_bytes() == b"another process"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_a_dangling_symlink_counts_as_taken(tmp_path):
    link = tmp_path / "out.json"
    link.symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(FileExistsError):
        atomic.write_text(link, "x", overwrite=False)
    assert not (tmp_path / "elsewhere.json").exists()


def test_stale_temporaries_of_killed_writers_are_removed_and_live_ones_kept(tmp_path):
    script = textwrap.dedent(f"""
        import os, sys
        from pal_core import atomic
        with atomic.atomic_path({str(tmp_path / 'x.png')!r}) as tmp:
            tmp.write_bytes(b"half")
            os._exit(9)   # killed mid-write: no clean-up runs
    """)
    subprocess.run([sys.executable, "-c", script], check=False)
    left = [p for p in tmp_path.iterdir() if p.name.endswith(atomic.TEMP_SUFFIX)]
    assert len(left) == 1 and not (tmp_path / "x.png").exists()
    live = atomic.temporary_name(tmp_path / "y.png")  # this process's own, still being written
    live.write_bytes(b"in progress")
    user_file = tmp_path / ".notes.123.tmp"  # looks like a temporary, but not one of ours
    user_file.write_text("keep")
    assert atomic.remove_stale_temporaries(tmp_path) == left
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, user_file.name])


def test_every_temp_then_rename_in_the_library_goes_through_the_helper():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    offenders = []
    for folder in ("pal_core", "nodes", "tools"):
        for dirpath, _, files in os.walk(os.path.join(root, folder)):
            for name in files:
                path = os.path.join(dirpath, name)
                if not name.endswith(".py") or path.endswith(os.path.join("pal_core", "atomic.py")):
                    continue
                text = open(path, encoding="utf-8").read()
                if "os.replace(" in text or ".tmp\"" in text or "os.link(" in text:
                    offenders.append(path)
    assert offenders == []


def test_a_written_file_gets_the_permissions_open_would_give(tmp_path):
    """safetensors creates its files 0600; through atomic_path they get 0666 less the umask, as open() gives."""
    from safetensors.torch import save_file

    mask = os.umask(0o027)
    try:
        with atomic.atomic_path(tmp_path / "model.safetensors") as tmp:
            save_file({"w": torch.zeros(2)}, str(tmp))
        atomic.write_text(tmp_path / "note.txt", "x")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(os.stat(tmp_path / "model.safetensors").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(tmp_path / "note.txt").st_mode) == 0o640
