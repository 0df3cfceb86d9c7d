"""A TorchScript file is a program: loading a detector never runs one unless the user opts in.

The official end2end.pt keeps mmsegmentation's module names, so its weights are read as data and
built into our own network; anything else needs trust_code=True / --allow-torchscript.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from pal_core import CheckpointError, load_detector
from pal_core.hub.loading import read_checkpoint, sniff_format
from pal_core.hub.torchscript import TorchScriptReadError, read_torchscript_weights

FIXTURES = Path(__file__).parent / "fixtures" / "mmseg"


def module_tree(state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Plain modules nested as the dotted keys say, holding the tensors as buffers."""
    root = nn.Module()
    for key, value in state_dict.items():
        *path, leaf = key.split(".")
        node = root
        for name in path:
            if not hasattr(node, name):
                node.add_module(name, nn.Module())
            node = getattr(node, name)
        node.register_buffer(leaf, value.clone())
    return root


class Export(nn.Module):
    """Like mmdeploy's export: the mmseg model's modules under their names, and a forward that,
    when run, writes `target` (TorchScript can map any writable file and change it)."""

    def __init__(self, tree: nn.Module, target: str, size: int):
        super().__init__()
        self.backbone = tree.backbone
        self.decode_head = tree.decode_head
        self.target = target
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        victim = torch.from_file(self.target, shared=True, size=self.size, dtype=torch.uint8)
        victim.fill_(35)  # '#': the user's script is rewritten
        return torch.zeros(1, 1, 512, 512, dtype=torch.long) + victim.sum()


def save_script(module: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(module).save(str(path))
    return path


@pytest.fixture
def victim(tmp_path) -> Path:
    script = tmp_path / "backup.sh"
    script.write_text("#!/bin/sh\necho my backup\n")
    return script


def hostile_export(tmp_path, victim, fixture="swin_w12", keep=lambda key: True) -> Path:
    state_dict = torch.load(FIXTURES / f"{fixture}.pth", weights_only=True)["state_dict"]
    tree = module_tree({k: v for k, v in state_dict.items() if keep(k)})
    return save_script(Export(tree, str(victim), victim.stat().st_size), tmp_path / "official_pal4vst.pth")


def test_the_payload_is_real_when_the_file_is_run(tmp_path, victim):
    """The file these tests use does rewrite the script when run: so the tests below can fail."""
    path = hostile_export(tmp_path, victim)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.load(str(path))(torch.zeros(1, 3, 512, 512))
    assert victim.read_text() != "#!/bin/sh\necho my backup\n"


def test_an_mmseg_export_loads_from_its_weights_without_running(tmp_path, victim):
    path = hostile_export(tmp_path, victim)
    assert sniff_format(path) == "torchscript"
    from_script = load_detector(path, device="cpu")
    assert victim.read_text() == "#!/bin/sh\necho my backup\n"
    assert from_script.info.format == "torchscript-weights" and from_script.output == "logits"
    from_pth = load_detector(FIXTURES / "swin_w12.pth", device="cpu")
    images = torch.rand(2, 96, 160, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(from_script.predict(images), from_pth.predict(images))
    # weights read as data run at any size, unlike the traced program
    native = load_detector(path, device="cpu", input_size=None)
    assert native.predict(images).shape == (2, 96, 160)
    assert victim.read_text() == "#!/bin/sh\necho my backup\n"
    # and convert to our format like any checkpoint
    assert read_checkpoint(path).model.config == read_checkpoint(FIXTURES / "swin_w12.pth").model.config


def test_a_program_whose_weights_are_not_a_model_is_refused(tmp_path, victim):
    path = hostile_export(tmp_path, victim, keep=lambda key: not key.startswith("decode_head.conv_seg"))
    with pytest.raises(CheckpointError, match="is a program.*read and write your files.*--allow-torchscript"):
        load_detector(path, device="cpu")
    with pytest.raises(CheckpointError, match="is a program") as refused:
        read_checkpoint(path)
    assert "--allow-torchscript" not in str(refused.value)  # converting or installing cannot run it (issue 25)
    assert "nothing to convert or install" in str(refused.value)
    assert victim.read_text() == "#!/bin/sh\necho my backup\n"


def test_the_cli_refuses_it_with_exit_2_and_touches_nothing(tmp_path, victim):
    path = hostile_export(tmp_path, victim, keep=lambda key: not key.startswith("decode_head.conv_seg"))
    image = tmp_path / "a.png"
    from PIL import Image
    Image.new("RGB", (32, 32), (120, 30, 200)).save(image)
    run = subprocess.run([sys.executable, "-m", "pal_core.cli", "detect", str(image), "--model", str(path),
                          "--device", "cpu"], capture_output=True, text=True)
    assert run.returncode == 2, run.stderr
    assert "is a program" in run.stderr and "--allow-torchscript" in run.stderr and "Traceback" not in run.stderr
    assert victim.read_text() == "#!/bin/sh\necho my backup\n"


def test_opting_in_runs_the_program(tmp_path, victim):
    """--allow-torchscript means what it says: the file's code runs (here, its payload)."""
    path = hostile_export(tmp_path, victim, keep=lambda key: not key.startswith("decode_head.conv_seg"))
    detector = load_detector(path, device="cpu", trust_code=True)
    assert detector.info.format == "torchscript"
    assert victim.read_text() != "#!/bin/sh\necho my backup\n"


class SetStatePayload(nn.Module):
    """TorchScript runs a module's __setstate__ inside torch.jit.load itself."""

    def __init__(self, target: str):
        super().__init__()
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.target, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.target = state[0]
        self.training = state[1]
        victim = torch.from_file(self.target, shared=True, size=4, dtype=torch.uint8)
        victim.fill_(35)


def test_load_time_code_never_runs(tmp_path, victim):
    path = save_script(SetStatePayload(str(victim)), tmp_path / "end2end.pt")
    with pytest.raises(CheckpointError, match="is a program"):
        load_detector(path, device="cpu")
    assert victim.read_text() == "#!/bin/sh\necho my backup\n"


def rewrite_pickle(source: Path, target: Path, data: bytes) -> Path:
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info, data if info.filename.endswith("/data.pkl") else src.read(info))
    return target


def test_a_pickle_that_imports_anything_is_refused(tmp_path, victim):
    path = hostile_export(tmp_path, victim)
    marker = tmp_path / "ran"
    evil = (b"\x80\x02cos\nsystem\nq\x00X" + len(f"touch {marker}").to_bytes(4, "little")
            + f"touch {marker}".encode() + b"\x85R.")
    crafted = rewrite_pickle(path, tmp_path / "crafted.pt", evil)
    with pytest.raises(TorchScriptReadError, match="os.system.*refused"):
        read_torchscript_weights(crafted)
    with pytest.raises(CheckpointError, match="os.system"):
        load_detector(crafted, device="cpu")
    assert not marker.exists()


def tensor_tree_pickle(size: tuple, stride: tuple, offset: int, numel: int = 8) -> bytes:
    """data.pkl of a module with one float tensor 'w' over storage '0', written opcode by opcode."""
    def text(value: str) -> bytes:
        return b"X" + len(value).to_bytes(4, "little") + value.encode()

    def integer(value: int) -> bytes:
        return b"J" + value.to_bytes(4, "little", signed=True)

    def tuple_of(values) -> bytes:
        return b"(" + b"".join(integer(v) for v in values) + b"t"

    storage = b"((" + text("storage") + b"ctorch\nFloatStorage\n" + text("0") + text("cpu") + integer(numel) + b"tQ"
    tensor = (b"ctorch._utils\n_rebuild_tensor_v2\n" + b"(" + storage[1:] + integer(offset) + tuple_of(size)
              + tuple_of(stride) + b"\x89" + b"ccollections\nOrderedDict\n)R" + b"tR")
    return b"\x80\x02c__torch__\nM\n)\x81}(" + text("w") + tensor + b"ub."


@pytest.mark.parametrize("size, stride, offset", [((10**6,), (1,), 0), ((4,), (1,), 10**9), ((2, 2), (10**6, 1), 0),
                                                  ((-1,), (1,), 0), ((4,), (-1,), 7)])
def test_tensors_that_reach_past_their_storage_are_refused(tmp_path, size, stride, offset):
    root = nn.Module()
    root.register_buffer("w", torch.arange(8, dtype=torch.float32))
    path = save_script(root, tmp_path / "m.pt")
    honest = rewrite_pickle(path, tmp_path / "honest.pt", tensor_tree_pickle((2, 4), (4, 1), 0))
    assert torch.equal(read_torchscript_weights(honest)["w"], torch.arange(8.0).view(2, 4))
    crafted = rewrite_pickle(path, tmp_path / "crafted.pt", tensor_tree_pickle(size, stride, offset))
    with pytest.raises(TorchScriptReadError, match="reaches past its storage|malformed shape"):
        read_torchscript_weights(crafted)
    lying = rewrite_pickle(path, tmp_path / "lying.pt", tensor_tree_pickle((8,), (1,), 0, numel=10**8))
    with pytest.raises(TorchScriptReadError, match="expected 100000000 x 4"):
        read_torchscript_weights(lying)


def test_damaged_archives_are_errors_not_tracebacks(tmp_path, victim):
    path = hostile_export(tmp_path, victim)
    for cut in (10, 1000, path.stat().st_size // 2):
        broken = tmp_path / f"cut{cut}.pt"
        broken.write_bytes(path.read_bytes()[:cut])
        with pytest.raises(CheckpointError):
            load_detector(broken, device="cpu")
    truncated_pickle = rewrite_pickle(path, tmp_path / "trunc.pt", b"\x80\x02c__torch__\nM\n)\x81}(X")
    with pytest.raises(CheckpointError, match="could not be read"):
        load_detector(truncated_pickle, device="cpu")


def test_no_torch_jit_load_outside_the_opt_in():
    root = Path(__file__).resolve().parent.parent
    calls = []
    for folder in ("pal_core", "nodes", "tools", "benchmarks"):
        for path in root.joinpath(folder).rglob("*.py"):
            calls += [(path.name, line.strip()) for line in path.read_text().splitlines() if "jit.load" in line]
    assert calls == [("loading.py", "return torch.jit.load(str(path), map_location=device)")]
    text = (root / "pal_core" / "hub" / "loading.py").read_text()
    program = text[text.index("def _read_torchscript_program"):]
    assert "return torch.jit.load" in program[:program.index("\ndef ", 5)]  # the one call is in that function
    assert text.count("_read_torchscript_program(") == 2  # defined once, called once: after the trust_code check
    assert "if not trust_code:\n            raise _refuse_program(path, error) from error\n        module = _read_torchscript_program" in text
