"""load_detector: formats recognised by content, TorchScript, shipped names, and clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from pal_core import CheckpointError, ModelNotFoundError, load_detector, read_detector_file
from pal_core.hub import loading
from pal_core.hub.loading import sniff_format

FIXTURES = Path(__file__).parent / "fixtures" / "mmseg"


class ArgmaxExport(nn.Module):
    """What mmdeploy's end2end.pt computes: normalised [1,3,512,512] -> class map [1,1,512,512]."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = F.interpolate(self.network(x), size=x.shape[2:], mode="bilinear", align_corners=False)
        return logits.argmax(dim=1, keepdim=True)


class CudaOnlyGraph(nn.Module):
    """A graph with a CUDA device constant, as tracing on a GPU can leave in a file."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(1, 1, 512, 512, dtype=torch.long, device=torch.device("cuda")) + x.shape[0]


@pytest.fixture(scope="module")
def torchscript_file(tmp_path_factory, tiny_detector_file):
    network = read_detector_file(tiny_detector_file).model.eval()
    path = tmp_path_factory.mktemp("ts") / "end2end.pt"
    with torch.no_grad():
        traced = torch.jit.trace(ArgmaxExport(network), torch.zeros(1, 3, 512, 512))
    traced.save(str(path))
    return path


def test_formats_are_recognised_by_content_not_name(tmp_path, tiny_detector_file, torchscript_file):
    disguised = {"model.bin": tiny_detector_file, "weights.safetensors": FIXTURES / "swin_w7.pth",
                 "end2end.pth": torchscript_file}
    expected = {"model.bin": "safetensors", "weights.safetensors": "mmseg", "end2end.pth": "torchscript"}
    for name, source in disguised.items():
        shutil.copy(source, tmp_path / name)
        detector = load_detector(tmp_path / name, device="cpu", trust_code=True)
        assert detector.info.format == expected[name]
        assert detector.predict(torch.rand(1, 24, 24, 3)).shape == (1, 24, 24)


def test_torchscript_gives_its_argmax_map(torchscript_file, tiny_detector_file):
    with pytest.raises(CheckpointError, match="is a program"):  # our own names, not mmseg's: only runnable
        load_detector(torchscript_file, device="cpu")
    scripted = load_detector(torchscript_file, device="cpu", trust_code=True)
    assert scripted.info.format == "torchscript" and scripted.output == "labels"
    images = torch.rand(2, 300, 200, 3)
    labels = scripted.predict(images)
    assert set(labels.unique().tolist()) <= {0.0, 1.0}
    # same network from the weights file: its mask at 512 agrees with the traced argmax
    from_weights = load_detector(tiny_detector_file, device="cpu")
    prob_512 = from_weights.predict([F.interpolate(images.permute(0, 3, 1, 2), size=(512, 512)).permute(0, 2, 3, 1)[0]])
    assert prob_512[0].shape == (512, 512)
    agreement = (scripted.mask(images) == from_weights.mask(images)).float().mean()
    assert agreement > 0.97
    with pytest.raises(ValueError, match="only runs at 512x512"):
        load_detector(torchscript_file, device="cpu", input_size=None, trust_code=True)
    with pytest.raises(ValueError, match="precision it was exported with"):
        load_detector(torchscript_file, device="cpu", dtype="bf16", trust_code=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_torchscript_traced_on_cuda_explains_itself_on_cpu(tmp_path):
    path = tmp_path / "end2end.pt"
    torch.jit.script(CudaOnlyGraph()).save(str(path))
    with pytest.raises(CheckpointError, match="traced on a CUDA GPU.*device='cuda'.*mmseg .pth"):
        load_detector(path, device="cpu", trust_code=True)


@pytest.mark.parametrize("content, message", [
    (b"hello, I am not a model", "not a detector file"),
    (b"PK\x03\x04broken zip", "damaged zip"),
    (b"", "not a detector file"),
])
def test_unrecognised_files_name_the_file_and_the_expected_formats(tmp_path, content, message):
    path = tmp_path / "weird.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as error:
        load_detector(path, device="cpu")
    assert str(path) in str(error.value)


def test_torch_checkpoints_that_are_not_mmseg_swin(tmp_path):
    plain = tmp_path / "resnet.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}}, plain)
    with pytest.raises(CheckpointError, match="not an mmsegmentation Swin"):
        load_detector(plain, device="cpu")
    wrong_shape = tmp_path / "wrong.pth"
    checkpoint = torch.load(FIXTURES / "swin_w7.pth", weights_only=True)
    checkpoint["state_dict"]["decode_head.conv_seg.bias"] = torch.zeros(5)
    torch.save(checkpoint, wrong_shape)
    with pytest.raises(CheckpointError, match="decode_head.classifier.bias") as error:
        load_detector(wrong_shape, device="cpu")
    assert str(wrong_shape) in str(error.value)


class Payload:
    """Anything that is not a plain tensor/container: weights_only loading must refuse it."""


def test_pickled_code_is_never_loaded(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": Payload()}, path)
    with pytest.raises(CheckpointError, match="holds 'test_loading.Payload', which is not data.*nothing was run"):
        load_detector(path, device="cpu")


def test_foreign_safetensors_and_broken_metadata(tmp_path, tiny_detector_file):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a PAL detector"):
        load_detector(foreign, device="cpu")
    checkpoint = read_detector_file(tiny_detector_file)
    tensors = {k: v.clone() for k, v in checkpoint.model.state_dict().items()}
    del tensors["decode_head.classifier.weight"]
    from safetensors import safe_open
    with safe_open(tiny_detector_file, "pt") as f:
        metadata = f.metadata()
    partial = tmp_path / "partial.safetensors"
    save_file(tensors, str(partial), metadata=metadata)
    with pytest.raises(CheckpointError, match="missing 'decode_head.classifier.weight'"):
        load_detector(partial, device="cpu")


def test_names_and_defaults(tmp_path, monkeypatch, tiny_detector_file):
    monkeypatch.setenv(loading.WEIGHTS_ENV, str(tmp_path))
    monkeypatch.setattr(loading, "DEFAULT_MODEL", "no_such_default_model")
    with pytest.raises(ModelNotFoundError, match="no default model is installed"):
        load_detector(device="cpu")
    with pytest.raises(ModelNotFoundError, match="no model named 'nonexistent'"):
        load_detector("nonexistent", device="cpu")
    with pytest.raises(ModelNotFoundError, match="model file not found"):
        load_detector(tmp_path / "missing.pt", device="cpu")
    with pytest.raises(ModelNotFoundError, match="is a folder"):
        load_detector(tmp_path, device="cpu")
    shutil.copy(tiny_detector_file, tmp_path / "my_model.safetensors")
    assert "my_model" in loading.available_models()
    assert load_detector("my_model", device="cpu").info.format == "safetensors"
    monkeypatch.setattr(loading, "DEFAULT_MODEL", "my_model")
    assert load_detector(device="cpu").name == "tiny"


def test_sniffing_reads_only_the_header(tmp_path, tiny_detector_file):
    assert sniff_format(Path(tiny_detector_file)) == "safetensors"
    assert sniff_format(FIXTURES / "swin_w12.pth") == "torch"
