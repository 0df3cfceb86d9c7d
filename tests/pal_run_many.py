"""Runs `pal run` several times in one process, so ComfyUI's engine is set up once for all of them.

    python tests/pal_run_many.py JOBS.json RESULTS.json

JOBS.json: a list of argument lists (each as given to `pal`). RESULTS.json gets, per job, its exit
status, stdout and stderr, and for the whole process every socket bind and listen: `pal run` must
open no server port, so listening and binding to a given port are refused (the job that tried fails).
Binding to port 0 without listening is let through and recorded: libraries probe that way whether
the machine has IPv6 (urllib3 at import).
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import sys
import traceback

SOCKET_CALLS: list[dict] = []


def _guard(name: str, original):
    def guarded(self, *args):
        address = args[0] if args else None
        probe = name == "bind" and isinstance(address, tuple) and len(address) >= 2 and address[1] == 0
        SOCKET_CALLS.append({"call": name, "args": repr(args), "allowed": probe})
        if not probe:
            raise OSError(f"pal_run_many: socket.{name}{args!r} is not allowed: pal run must open no server port")
        return original(self, *args)
    return guarded


def main(jobs_path: str, results_path: str) -> int:
    socket.socket.bind = _guard("bind", socket.socket.bind)
    socket.socket.listen = _guard("listen", socket.socket.listen)
    from pal_core.cli import main as pal

    with open(jobs_path, encoding="utf-8") as f:
        jobs = json.load(f)
    results = []
    for argv in jobs:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = pal(argv)
            except BaseException:  # a crash is a result too: the test shows it
                traceback.print_exc()
                status = "crashed"
        results.append({"argv": argv, "status": status, "stdout": out.getvalue(), "stderr": err.getvalue()})
    with open(results_path, "w", encoding="utf-8") as f:
        json.dump({"jobs": results, "socket_calls": SOCKET_CALLS}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
