"""Stable Diffusion inpainting through diffusers, tested on a tiny random pipeline built here.

Nothing is downloaded: the UNet, VAE and text encoder come from tiny configs, the tokenizer from a
vocabulary this file writes, and the pipeline is saved to a temporary folder and loaded back
through `make_inpainter("diffusers:PATH")`, exactly as a user's local folder would be.
"""

from __future__ import annotations

import json

import pytest
import torch

from pal_core.refinement.inpainters import make_inpainter
from pal_core.refinement.inpainters.diffusers import InpainterLoadError


@pytest.fixture(scope="module")
def tiny_pipeline_dir(tmp_path_factory) -> str:
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = tmp_path_factory.mktemp("tiny_sd")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=9, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4)
    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=77, projection_dim=16, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for letter in "abcdefghijklmnopqrstuvwxyz":
        vocab[letter] = len(vocab)
        vocab[letter + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    pipeline = StableDiffusionInpaintPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                              scheduler=DDIMScheduler(steps_offset=1), safety_checker=None, feature_extractor=None,
                                              requires_safety_checker=False)
    pipeline.save_pretrained(folder / "pipeline")
    return str(folder / "pipeline")


def test_tiny_pipeline_inpaints_with_one_seed_per_crop(tiny_pipeline_dir):
    inpainter = make_inpainter(f"diffusers:{tiny_pipeline_dir}", device="cpu", steps=2, guidance=2.0,
                               batch_size=3, negative_prompt="blurry")
    assert inpainter.multiple == 8 and inpainter.steps == 2
    crop = torch.rand(1, 32, 32, 3, dtype=torch.float64).expand(3, -1, -1, -1)
    masks = torch.zeros(3, 32, 32, dtype=torch.float64)
    masks[:, 8:24, 8:24] = 1
    result = inpainter.inpaint(crop, masks, ["a cat", "a cat", "a cat"], [5, 5, 6])
    assert result.shape == crop.shape and result.dtype == torch.float64
    assert 0.0 <= result.min() and result.max() <= 1.0
    assert torch.allclose(result[0], result[1], atol=1e-5)  # same seed, same prompt: same pixels
    assert not torch.allclose(result[0], result[2])  # seed + 1 for the next region: other noise


def test_crop_sides_must_be_multiples_of_8(tiny_pipeline_dir):
    inpainter = make_inpainter(f"diffusers:{tiny_pipeline_dir}", device="cpu", steps=1)
    with pytest.raises(ValueError, match="multiples of 8"):
        inpainter.inpaint(torch.rand(1, 36, 36, 3), torch.ones(1, 36, 36))


def test_hub_ids_and_missing_paths_get_clear_errors(tmp_path):
    with pytest.raises(InpainterLoadError, match="looks like a Hugging Face hub id. PAL never downloads"):
        make_inpainter("diffusers:stabilityai/stable-diffusion-2-inpainting")
    with pytest.raises(InpainterLoadError, match="not found"):
        make_inpainter(f"diffusers:{tmp_path / 'nothing-here'}")
    with pytest.raises(InpainterLoadError, match="no model_index.json"):
        make_inpainter(f"diffusers:{tmp_path}")
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    with pytest.raises(InpainterLoadError, match="not a checkpoint file"):
        make_inpainter(f"diffusers:{text}")


def test_single_file_without_local_config_says_what_is_missing(tmp_path):
    from safetensors.torch import save_file

    checkpoint = tmp_path / "model.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, str(checkpoint))
    with pytest.raises(InpainterLoadError, match="needs its diffusers component configs"):
        make_inpainter(f"diffusers:{checkpoint}")


def test_pal_fix_runs_a_diffusers_pipeline_folder(tiny_pipeline_dir, tiny_detector_file, tmp_path):
    import numpy as np
    from PIL import Image

    from pal_core.cli import main

    source = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(source)
    out = tmp_path / "out"
    code = main(["fix", str(source), "--out", str(out), "--model", tiny_detector_file, "--device", "cpu",
                 "--input-size", "64", "--threshold", "0.56", "--min-side", "16", "--resolution", "30", "--steps", "2", "--seed", "3",
                 "--prompt", "a cat", "--no-redetect", "--inpainter", f"diffusers:{tiny_pipeline_dir}"])
    assert code == 0
    report = json.loads((out / "in.json").read_text())
    assert report["inpainter"] == "diffusers:pipeline" and report["prompt"] == "a cat"
    assert report["regions"] and report["regions"][0]["seed"] == 3 and report["par_after"] is None
    x0, _, x1, _ = report["regions"][0]["box"]
    assert report["regions"][0]["scale"] == round(32 / (x1 - x0), 4)  # crops at 30 rounded to a multiple of 8
    assert np.asarray(Image.open(out / "in.png")).shape == (48, 40, 3)


def test_sdxl_single_files_are_told_apart_by_their_keys(tmp_path):
    from safetensors.torch import save_file

    from pal_core.refinement.inpainters.diffusers import _is_sdxl_checkpoint

    sdxl, sd = tmp_path / "xl.safetensors", tmp_path / "sd.safetensors"
    save_file({"conditioner.embedders.1.model.ln_final.weight": torch.zeros(1)}, str(sdxl))
    save_file({"cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.zeros(1)}, str(sd))
    assert _is_sdxl_checkpoint(sdxl) and not _is_sdxl_checkpoint(sd)
    with pytest.raises(InpainterLoadError, match="is not a folder"):
        make_inpainter(f"diffusers:{sd}", config=str(tmp_path / "missing"))
