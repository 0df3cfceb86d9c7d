"""The adapters to ComfyUI's own services, checked against stand-ins of ComfyUI's API.

ComfyUI is not installable here, so these tests put small modules with ComfyUI's names and call
signatures (comfy_extras facts in shared/notes/comfyui-facts.md) into sys.modules and check that
our nodes call them as ComfyUI expects.
"""

from __future__ import annotations

import importlib
import sys
import types

import torch

from pal_nodes.inpainting import PALComfyInpainter


class FakeVAE:
    def decode(self, samples):
        # ComfyUI's VAE.decode returns [B, H, W, C]; here: 8x the latent size, the latent's mean as colour
        b, _, h, w = samples.shape
        return samples.mean(dim=1, keepdim=True).permute(0, 2, 3, 1).expand(b, h, w, 1).repeat(1, 8, 8, 3).clamp(0, 1)


def install_fake_comfy_nodes(monkeypatch, calls: list):
    module = types.ModuleType("nodes")

    class InpaintModelConditioning:
        def encode(self, positive, negative, pixels, vae, mask, noise_mask=True):
            calls.append(("encode", tuple(pixels.shape), tuple(mask.shape), noise_mask))
            latent = torch.full((1, 4, pixels.shape[1] // 8, pixels.shape[2] // 8), 0.25)
            return positive, negative, {"samples": latent, "noise_mask": mask}

    def common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent, denoise=1.0):
        calls.append(("sample", seed, steps, cfg, sampler_name, scheduler, denoise))
        return ({"samples": latent["samples"] + seed / 100},)

    module.InpaintModelConditioning = InpaintModelConditioning
    module.common_ksampler = common_ksampler
    monkeypatch.setitem(sys.modules, "nodes", module)
    comfy = types.ModuleType("comfy")
    latent_formats = types.ModuleType("comfy.latent_formats")
    latent_formats.SD15 = type("SD15", (), {})
    latent_formats.SDXL = type("SDXL", (), {})
    comfy.latent_formats = latent_formats
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.latent_formats", latent_formats)
    sys.modules.pop("pal_nodes.comfy_sampling", None)


def test_comfy_model_inpainter_calls_comfyui_per_region(monkeypatch):
    calls: list = []
    install_fake_comfy_nodes(monkeypatch, calls)
    (inpainter,) = PALComfyInpainter().make("model", FakeVAE(), "pos", "neg", 12, 6.5, "euler", "karras", 0.7)
    crops = torch.rand(2, 64, 64, 3)
    masks = torch.zeros(2, 64, 64)
    out = inpainter.inpaint(crops, masks, "ignored", [3, 40])
    assert out.shape == crops.shape and out.dtype == crops.dtype
    assert calls == [("encode", (1, 64, 64, 3), (1, 64, 64), True), ("sample", 3, 12, 6.5, "euler", "karras", 0.7),
                     ("encode", (1, 64, 64, 3), (1, 64, 64), True), ("sample", 40, 12, 6.5, "euler", "karras", 0.7)]
    assert torch.allclose(out[0], torch.full((64, 64, 3), 0.28)) and torch.allclose(out[1], torch.full((64, 64, 3), 0.65))
    assert inpainter.multiple == 8


def test_comfy_model_inpainter_works_at_the_models_own_size(monkeypatch):
    install_fake_comfy_nodes(monkeypatch, [])
    formats = sys.modules["comfy.latent_formats"]

    def model_with(latent_format):
        return types.SimpleNamespace(model=types.SimpleNamespace(latent_format=latent_format))

    sd15 = PALComfyInpainter().make(model_with(formats.SD15()), FakeVAE(), "p", "n", 1, 1.0, "euler", "normal", 1.0)[0]
    sdxl = PALComfyInpainter().make(model_with(formats.SDXL()), FakeVAE(), "p", "n", 1, 1.0, "euler", "normal", 1.0)[0]
    assert (sd15.resolution, sdxl.resolution) == (512, 1024)


def test_model_folders_and_progress_use_comfyui_when_present(monkeypatch, tmp_path):
    registered, progress = {}, []
    folder_paths = types.ModuleType("folder_paths")
    folder_paths.models_dir = str(tmp_path)
    folder_paths.folder_names_and_paths = {}
    folder_paths.add_model_folder_path = lambda name, path: registered.setdefault(name, path)
    folder_paths.get_filename_list = lambda kind: ["official.pth"] if kind == "pal4vst" else []
    folder_paths.get_full_path_or_raise = lambda kind, name: str(tmp_path / kind / name)
    comfy = types.ModuleType("comfy")
    utils = types.ModuleType("comfy.utils")
    management = types.ModuleType("comfy.model_management")

    class ProgressBar:
        def __init__(self, total):
            self.total = total

        def update_absolute(self, value, total, preview=None):
            progress.append((value, total))

    utils.ProgressBar = ProgressBar
    management.get_torch_device = lambda: torch.device("cpu")
    management.intermediate_device = lambda: torch.device("cpu")
    management.soft_empty_cache = lambda: None
    management.throw_exception_if_processing_interrupted = lambda: progress.append("checked")
    for name, module in {"folder_paths": folder_paths, "comfy": comfy, "comfy.utils": utils,
                         "comfy.model_management": management}.items():
        monkeypatch.setitem(sys.modules, name, module)
    from pal_nodes import comfy_env
    try:
        inside = importlib.reload(comfy_env)
        assert inside.in_comfyui()
        inside.register_model_folders()
        assert registered == {"pal4vst": str(tmp_path / "pal4vst")}
        assert inside.model_files("pal4vst") == ["official.pth"]
        assert inside.model_path("pal4vst", "official.pth") == str(tmp_path / "pal4vst" / "official.pth")
        bar = inside.Progress(2)
        bar.step()
        bar.step()
        assert progress == [(1, 2), "checked", (2, 2), "checked"]
    finally:
        monkeypatch.undo()
        importlib.reload(comfy_env)
    assert not comfy_env.in_comfyui()


def test_inside_comfyui_the_detector_is_loaded_and_offloaded_through_its_own_api(monkeypatch):
    """ComfyUI owns GPU memory: before a run it frees room, the detector loads its weights, and after
    the run the detector parks them on ComfyUI's offload device (never a move behind its back)."""
    from pal_nodes import comfy_env

    calls = []
    management = types.SimpleNamespace(
        free_memory=lambda size, device: calls.append(("free", size, str(device))),
        unet_offload_device=lambda: torch.device("cpu"),
        soft_empty_cache=lambda: calls.append("empty cache"))

    class Detector:
        device = torch.device("cuda", 0)
        model = torch.nn.Linear(4, 4)  # 20 float32 parameters: 80 bytes

        def load(self):
            calls.append("load")

        def offload(self, device):
            calls.append(("offload", str(device)))

    monkeypatch.setattr(comfy_env, "model_management", management)
    with comfy_env.detector_on_device(Detector()):
        calls.append("run")
    assert calls == [("free", 240, "cuda:0"), "load", "run", ("offload", "cpu"), "empty cache"]
