"""How long `pal` takes to start: `pal --help` and `pal models`, per checkout, alternately in one run.

Each command runs in a fresh interpreter (`python -m pal_core.cli ...` with the checkout first on
PYTHONPATH), so the time is what a user waits for: interpreter start, imports, the command itself.
Checkouts are timed in turn, round after round, so a change in the machine's load hits them alike.
Compare the current tree with an older commit:

    git worktree add /tmp/pal-before <commit>
    python benchmarks/startup.py --tree /tmp/pal-before --tree . --rounds 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = (["--help"], ["models"])


def run_once(tree: Path, command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pal_core.cli", *command], cwd=tree, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def which_library(tree: Path, env: dict[str, str]) -> str:
    """The pal_core this tree's runs import (a check that PYTHONPATH wins over an installed copy)."""
    code = "import pal_core, os; print(os.path.dirname(pal_core.__file__))"
    return subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", type=Path, help="a checkout to time (repeat; default: this one)")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each command per checkout")
    args = parser.parse_args(argv)
    trees = [t.resolve() for t in (args.tree or [ROOT])]
    with tempfile.TemporaryDirectory() as home:  # `pal models` lists an empty models folder, the same for all
        envs = {t: {**os.environ, "PYTHONPATH": str(t), "PAL_HOME": home} for t in trees}
        for tree in trees:
            print(f"# {tree}: pal_core from {which_library(tree, envs[tree])}")
            for command in COMMANDS:
                run_once(tree, command, envs[tree])  # warm the file cache
        times = {(t, " ".join(c)): [] for t in trees for c in COMMANDS}
        for _ in range(args.rounds):
            for command in COMMANDS:
                for tree in trees:
                    times[tree, " ".join(command)].append(run_once(tree, command, envs[tree]))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {args.rounds} rounds, {os.cpu_count()} CPUs, load average {load:.1f} at the end")
    print("| checkout | command | median s | min s | max s | speed-up over the first checkout |")
    print("|---|---|---|---|---|---|")
    for command in COMMANDS:
        name = " ".join(command)
        first = statistics.median(times[trees[0], name])
        for tree in trees:
            values = times[tree, name]
            median = statistics.median(values)
            print(f"| {tree.name or tree} | pal {name} | {median:.2f} | {min(values):.2f} | {max(values):.2f} | "
                  f"{first / median:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
