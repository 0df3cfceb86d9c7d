"""Runs `pal run` several times in one process, so ComfyUI's engine is set up once for all of them.

    python tests/pal_run_many.py JOBS.json RESULTS.json

JOBS.json: a list of jobs, each an argument list as given to `pal`, or {"run_workflow": {keyword
arguments}, "outputs": [[node_id, slot], ...]} for the Python API, which reports the engine, the files
and a description of each output asked for. RESULTS.json gets, per job, its exit status (or result),
stdout and stderr, and for the whole process every socket bind and listen: `pal run` must
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


def describe(value):
    """JSON-ready: a tensor's shape and range, a number or text as it is, a list item by item."""
    import torch
    if isinstance(value, torch.Tensor):
        return {"shape": list(value.shape), "min": float(value.min()), "max": float(value.max())}
    if isinstance(value, (list, tuple)):
        return [describe(item) for item in value]
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return type(value).__name__


def run_python(job: dict) -> dict:
    from pal_core.workflow import run_workflow
    result = run_workflow(**job["run_workflow"])
    outputs = {f"{node_id}:{slot}": describe(result.output(node_id, slot)) for node_id, slot in job["outputs"]}
    return {"engine": result.engine, "files": [str(path) for path in result.files], "outputs": outputs}


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
                status = run_python(argv) if isinstance(argv, dict) else pal(argv)
            except BaseException:  # a crash is a result too: the test shows it
                traceback.print_exc()
                status = "crashed"
        results.append({"argv": argv, "status": status, "stdout": out.getvalue(), "stderr": err.getvalue()})
    with open(results_path, "w", encoding="utf-8") as f:
        json.dump({"jobs": results, "socket_calls": SOCKET_CALLS}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
