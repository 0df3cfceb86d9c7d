"""Peak memory and time of installing an official-size PAL4VST checkpoint, as mmcv 1.x's save-best hook
writes it (~1.46 GB: the Swin-B + UPerNet state_dict plus AdamW's two moments per parameter).

The file is built under a temporary folder (never in the repository): random weights under mmseg's 439
key names and shapes for PAL4VST's config (Swin-B, window 12, UPerHead 512, FCN auxiliary head),
written by tests/mm_checkpoints.py with the exact structure of the real files (numpy 1 global names,
meta, optimizer). Then, each in its own process (so its peak RSS is its own), in one run:

    import   `pal models --help`: what the CLI's imports alone take (the floor under both rows)
    ours     `pal models add FILE --name pal4vst-unified --dir TMP` (the reader memory-maps the file)
    eager    the same command, but every tensor of the checkpoint first copied into memory, as
             torch.load without mmap would hold it (read by our own reader, as data): what holding the
             optimizer state costs

    python benchmarks/install_checkpoint.py            # builds /tmp/pal-bench-*/best_mIoU_iter_7200.pth
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from mm_checkpoints import save_mmcv1_checkpoint  # noqa: E402
from pal_core.hub import catalogue  # noqa: E402
from pal_core.models import build_model  # noqa: E402
from pal_core.models.swin_upernet import _KEY_MAP  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "mmseg" / "swin_w12.pth"  # mmseg's own key names (depths 2, 2, 2, 2)
AUX_IN, AUX_CHANNELS = 512, 256  # PAL4VST's FCN auxiliary head: stage 2 of Swin-B in, 256 channels


def mmseg_keys(depths: list[int]) -> list[str]:
    """mmseg's key names for a Swin + UPerHead of these depths, in mmseg's order (from the fixture's)."""
    fixture = list(torch.load(FIXTURE, map_location="cpu", weights_only=True)["state_dict"])
    keys, stages_done = [], set()
    for key in fixture:
        block = re.match(r"backbone\.stages\.(\d+)\.blocks\.\d+\.", key)
        if block is None:
            keys.append(key)
            continue
        stage = int(block.group(1))
        if stage in stages_done:
            continue
        stages_done.add(stage)
        prefix = f"backbone.stages.{stage}.blocks.0."
        template = [k[len(prefix):] for k in fixture if k.startswith(prefix)]
        keys += [f"backbone.stages.{stage}.blocks.{b}.{name}" for b in range(depths[stage]) for name in template]
    return keys


def pal4vst_mmseg_state_dict(seed: int = 0) -> OrderedDict:
    """Random weights with the names and shapes of an mmseg PAL4VST checkpoint."""
    architecture = catalogue.PAL4VST_ARCHITECTURE
    ours = build_model("swin_upernet", architecture).state_dict()
    window = architecture["window_size"]
    generator = torch.Generator().manual_seed(seed)
    aux = {"auxiliary_head.conv_seg.weight": (2, AUX_CHANNELS, 1, 1), "auxiliary_head.conv_seg.bias": (2,),
           "auxiliary_head.convs.0.conv.weight": (AUX_CHANNELS, AUX_IN, 3, 3)}
    state = OrderedDict()
    for key in mmseg_keys(architecture["depths"]):
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7200)
        elif key.endswith("relative_position_index"):
            state[key] = torch.randint(0, (2 * window - 1) ** 2, (window**2, window**2), generator=generator)
        elif key.startswith("auxiliary_head."):
            shape = aux.get(key, (AUX_CHANNELS,))
            state[key] = torch.randn(shape, generator=generator) * 0.02
        else:
            ours_key = next(re.sub(p, r, key) for p, r in _KEY_MAP if re.search(p, key))
            state[key] = torch.randn(ours[ours_key].shape, generator=generator) * 0.02
            if key.endswith("running_var"):
                state[key] = state[key].abs() + 1.0
    return state


def run_measured(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of one child process, by GNU time (`/usr/bin/time -f %M`): the
    child's own peak (a fork of this process, which built the 1.46 GB file, would count that too)."""
    report = Path(tempfile.mktemp(prefix="pal-bench-time-"))
    started = time.perf_counter()
    subprocess.run(["/usr/bin/time", "-o", str(report), "-f", "%M", *command], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    peak_kb = int(report.read_text().split()[-1])
    report.unlink()
    return wall, peak_kb / 1e6


EAGER = """
import sys, torch
from pal_core.hub import installing, loading
from pal_core.hub.checkpoint import DetectorCheckpoint
from pal_core.hub.torch_pickle import read_torch_checkpoint
from pal_core.detect.preprocess import Preprocess
def in_memory(tree):
    if isinstance(tree, torch.Tensor):
        return tree.clone()
    if isinstance(tree, dict):
        return type(tree)((k, in_memory(v)) for k, v in tree.items())
    if isinstance(tree, (list, tuple)):
        return type(tree)(in_memory(v) for v in tree)
    return tree
def eager(path):
    loaded = in_memory(read_torch_checkpoint(path))  # everything in memory, optimizer too
    return DetectorCheckpoint(loading._mmseg_model(path, loaded["state_dict"], loaded["meta"]), path.stem, Preprocess())
installing.read_checkpoint = eager
from pal_core.cli import main
sys.exit(main(["models", "add", sys.argv[1], "--name", "pal4vst-unified", "--dir", sys.argv[2], "--overwrite"]))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep the 1.46 GB file and the installed models")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pal-bench-"))
    state = pal4vst_mmseg_state_dict()
    counts = {part: sum(k.startswith(part) for k in state) for part in ("backbone.", "decode_head.", "auxiliary_head.")}
    path = save_mmcv1_checkpoint(state, work / "best_mIoU_iter_7200.pth")
    del state
    print(f"checkpoint: {path} {path.stat().st_size / 1e9:.2f} GB, state_dict keys {sum(counts.values())} {counts}")
    env_python = sys.executable
    rows = {
        "import": [env_python, "-m", "pal_core.cli", "models", "--help"],  # the CLI's imports alone
        "ours": [env_python, "-m", "pal_core.cli", "models", "add", str(path), "--name", "pal4vst-unified",
                 "--dir", str(work / "ours"), "--overwrite"],
        "eager": [env_python, "-c", EAGER, str(path), str(work / "eager")],
    }
    results = {}
    for name, command in rows.items():
        results[name] = run_measured(command)
    print(f"{'row':<6} {'wall s':>7} {'peak RSS GB':>12}")
    for name, (wall, peak) in results.items():
        print(f"{name:<6} {wall:>7.1f} {peak:>12.2f}")
    floor = results["import"][1]
    print(f"peak memory eager/ours: {results['eager'][1] / results['ours'][1]:.2f}x; above the imports: "
          f"{(results['eager'][1] - floor) / (results['ours'][1] - floor):.2f}x")
    installed = work / "ours" / "pal4vst-unified.safetensors"
    print(f"installed: {installed.stat().st_size / 1e9:.3f} GB")
    if not args.keep:
        for file in sorted(work.rglob("*"), reverse=True):
            file.unlink() if file.is_file() else file.rmdir()
        work.rmdir()


if __name__ == "__main__":
    main()
