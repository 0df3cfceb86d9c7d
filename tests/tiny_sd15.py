"""A random, tiny Stable Diffusion 1.5 single-file checkpoint, for tests against the real ComfyUI.

ComfyUI recognises a checkpoint by its tensors' names and shapes (comfy/model_detection.py): a UNet
with model_channels 320 and cross-attention context 768 in the original (LDM) layout is SD1.x, however
few levels and blocks it has. So the UNet here has two levels of one block each (samples a 64x64 image
on a CPU in seconds), while the VAE and the CLIP-L text encoder keep their real shapes (ComfyUI builds
those from fixed configurations, so every tensor must be there). Weights are random, seeded, stored
as fp16: the outputs are noise, but finite and reproducible.

    path = write_tiny_sd15(tmp_path / "tiny_sd15.safetensors")

Command line: `python tests/tiny_sd15.py OUT.safetensors [--seed N]`.
Key layout: model.diffusion_model.* (UNet), first_stage_model.* (VAE), cond_stage_model.transformer.*
(CLIP-L as transformers names it).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from safetensors.torch import save_file

Shapes = dict[str, tuple[int, ...]]

UNET_CHANNELS = 320        # SD1.x's model_channels: part of how ComfyUI recognises the model
UNET_LEVELS = (1, 1)       # channel multipliers; SD1.5 has (1, 2, 4, 4)
UNET_BLOCKS_PER_LEVEL = 1  # SD1.5 has 2
TIME_EMBED = 4 * UNET_CHANNELS
CONTEXT_DIM = 768          # CLIP-L's width: the other half of the recognition
LATENT_CHANNELS = 4

VAE_CHANNELS = 128
VAE_LEVELS = (1, 2, 4, 4)
VAE_BLOCKS_PER_LEVEL = 2

CLIP_WIDTH = 768
CLIP_LAYERS = 12
CLIP_MLP = 3072
CLIP_VOCAB = 49408
CLIP_POSITIONS = 77


def _conv(shapes: Shapes, name: str, c_out: int, c_in: int, k: int = 3) -> None:
    shapes[f"{name}.weight"] = (c_out, c_in, k, k)
    shapes[f"{name}.bias"] = (c_out,)


def _linear(shapes: Shapes, name: str, c_out: int, c_in: int, bias: bool = True) -> None:
    shapes[f"{name}.weight"] = (c_out, c_in)
    if bias:
        shapes[f"{name}.bias"] = (c_out,)


def _norm(shapes: Shapes, name: str, channels: int) -> None:
    shapes[f"{name}.weight"] = (channels,)
    shapes[f"{name}.bias"] = (channels,)


# --- UNet (openaimodel layout) ---------------------------------------------------------------------

def _unet_resblock(shapes: Shapes, name: str, c_in: int, c_out: int) -> None:
    _norm(shapes, f"{name}.in_layers.0", c_in)
    _conv(shapes, f"{name}.in_layers.2", c_out, c_in)
    _linear(shapes, f"{name}.emb_layers.1", c_out, TIME_EMBED)
    _norm(shapes, f"{name}.out_layers.0", c_out)
    _conv(shapes, f"{name}.out_layers.3", c_out, c_out)
    if c_in != c_out:
        _conv(shapes, f"{name}.skip_connection", c_out, c_in, k=1)


def _unet_transformer(shapes: Shapes, name: str, c: int) -> None:
    """SpatialTransformer, depth 1, conv projections (SD1.x: use_linear_in_transformer False)."""
    _norm(shapes, f"{name}.norm", c)
    _conv(shapes, f"{name}.proj_in", c, c, k=1)
    block = f"{name}.transformer_blocks.0"
    for attn, context in (("attn1", c), ("attn2", CONTEXT_DIM)):
        _linear(shapes, f"{block}.{attn}.to_q", c, c, bias=False)
        _linear(shapes, f"{block}.{attn}.to_k", c, context, bias=False)
        _linear(shapes, f"{block}.{attn}.to_v", c, context, bias=False)
        _linear(shapes, f"{block}.{attn}.to_out.0", c, c)
    _linear(shapes, f"{block}.ff.net.0.proj", 8 * c, c)  # GEGLU: value and gate, 4c each
    _linear(shapes, f"{block}.ff.net.2", c, 4 * c)
    for i in (1, 2, 3):
        _norm(shapes, f"{block}.norm{i}", c)
    _conv(shapes, f"{name}.proj_out", c, c, k=1)


def unet_shapes(prefix: str = "model.diffusion_model.") -> Shapes:
    shapes: Shapes = {}
    _linear(shapes, f"{prefix}time_embed.0", TIME_EMBED, UNET_CHANNELS)
    _linear(shapes, f"{prefix}time_embed.2", TIME_EMBED, TIME_EMBED)
    _conv(shapes, f"{prefix}input_blocks.0.0", UNET_CHANNELS, LATENT_CHANNELS)
    skips = [UNET_CHANNELS]  # channels of every input block's output, for the output blocks' concat
    channels, block = UNET_CHANNELS, 1
    for level, mult in enumerate(UNET_LEVELS):
        for _ in range(UNET_BLOCKS_PER_LEVEL):
            _unet_resblock(shapes, f"{prefix}input_blocks.{block}.0", channels, mult * UNET_CHANNELS)
            channels = mult * UNET_CHANNELS
            _unet_transformer(shapes, f"{prefix}input_blocks.{block}.1", channels)
            skips.append(channels)
            block += 1
        if level != len(UNET_LEVELS) - 1:
            _conv(shapes, f"{prefix}input_blocks.{block}.0.op", channels, channels)
            skips.append(channels)
            block += 1
    _unet_resblock(shapes, f"{prefix}middle_block.0", channels, channels)
    _unet_transformer(shapes, f"{prefix}middle_block.1", channels)
    _unet_resblock(shapes, f"{prefix}middle_block.2", channels, channels)
    block = 0
    for level in reversed(range(len(UNET_LEVELS))):
        out = UNET_LEVELS[level] * UNET_CHANNELS
        for i in range(UNET_BLOCKS_PER_LEVEL + 1):
            _unet_resblock(shapes, f"{prefix}output_blocks.{block}.0", channels + skips.pop(), out)
            channels = out
            _unet_transformer(shapes, f"{prefix}output_blocks.{block}.1", channels)
            if level != 0 and i == UNET_BLOCKS_PER_LEVEL:
                _conv(shapes, f"{prefix}output_blocks.{block}.2.conv", channels, channels)
            block += 1
    _norm(shapes, f"{prefix}out.0", channels)
    _conv(shapes, f"{prefix}out.2", LATENT_CHANNELS, channels)
    return shapes


# --- VAE (LDM AutoencoderKL layout, SD's real configuration) --------------------------------------

def _vae_resblock(shapes: Shapes, name: str, c_in: int, c_out: int) -> None:
    _norm(shapes, f"{name}.norm1", c_in)
    _conv(shapes, f"{name}.conv1", c_out, c_in)
    _norm(shapes, f"{name}.norm2", c_out)
    _conv(shapes, f"{name}.conv2", c_out, c_out)
    if c_in != c_out:
        _conv(shapes, f"{name}.nin_shortcut", c_out, c_in, k=1)


def _vae_middle(shapes: Shapes, name: str, c: int) -> None:
    _vae_resblock(shapes, f"{name}.block_1", c, c)
    _norm(shapes, f"{name}.attn_1.norm", c)
    for part in ("q", "k", "v", "proj_out"):
        _conv(shapes, f"{name}.attn_1.{part}", c, c, k=1)
    _vae_resblock(shapes, f"{name}.block_2", c, c)


def vae_shapes(prefix: str = "first_stage_model.") -> Shapes:
    shapes: Shapes = {}
    top = VAE_LEVELS[-1] * VAE_CHANNELS
    enc = f"{prefix}encoder"
    _conv(shapes, f"{enc}.conv_in", VAE_CHANNELS, 3)
    channels = VAE_CHANNELS
    for level, mult in enumerate(VAE_LEVELS):
        for j in range(VAE_BLOCKS_PER_LEVEL):
            _vae_resblock(shapes, f"{enc}.down.{level}.block.{j}", channels, mult * VAE_CHANNELS)
            channels = mult * VAE_CHANNELS
        if level != len(VAE_LEVELS) - 1:
            _conv(shapes, f"{enc}.down.{level}.downsample.conv", channels, channels)
    _vae_middle(shapes, f"{enc}.mid", top)
    _norm(shapes, f"{enc}.norm_out", top)
    _conv(shapes, f"{enc}.conv_out", 2 * LATENT_CHANNELS, top)  # mean and log-variance
    _conv(shapes, f"{prefix}quant_conv", 2 * LATENT_CHANNELS, 2 * LATENT_CHANNELS, k=1)
    _conv(shapes, f"{prefix}post_quant_conv", LATENT_CHANNELS, LATENT_CHANNELS, k=1)
    dec = f"{prefix}decoder"
    _conv(shapes, f"{dec}.conv_in", top, LATENT_CHANNELS)
    _vae_middle(shapes, f"{dec}.mid", top)
    channels = top
    for level in reversed(range(len(VAE_LEVELS))):
        for j in range(VAE_BLOCKS_PER_LEVEL + 1):
            _vae_resblock(shapes, f"{dec}.up.{level}.block.{j}", channels, VAE_LEVELS[level] * VAE_CHANNELS)
            channels = VAE_LEVELS[level] * VAE_CHANNELS
        if level != 0:
            _conv(shapes, f"{dec}.up.{level}.upsample.conv", channels, channels)
    _norm(shapes, f"{dec}.norm_out", channels)
    _conv(shapes, f"{dec}.conv_out", 3, channels)
    return shapes


# --- CLIP-L text encoder (transformers' CLIPTextModel names) --------------------------------------

def clip_shapes(prefix: str = "cond_stage_model.transformer.text_model.") -> Shapes:
    shapes: Shapes = {
        f"{prefix}embeddings.token_embedding.weight": (CLIP_VOCAB, CLIP_WIDTH),
        f"{prefix}embeddings.position_embedding.weight": (CLIP_POSITIONS, CLIP_WIDTH),
    }
    for i in range(CLIP_LAYERS):
        layer = f"{prefix}encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            _linear(shapes, f"{layer}.self_attn.{proj}", CLIP_WIDTH, CLIP_WIDTH)
        _norm(shapes, f"{layer}.layer_norm1", CLIP_WIDTH)
        _linear(shapes, f"{layer}.mlp.fc1", CLIP_MLP, CLIP_WIDTH)
        _linear(shapes, f"{layer}.mlp.fc2", CLIP_WIDTH, CLIP_MLP)
        _norm(shapes, f"{layer}.layer_norm2", CLIP_WIDTH)
    _norm(shapes, f"{prefix}final_layer_norm", CLIP_WIDTH)
    return shapes


def checkpoint_shapes() -> Shapes:
    return {**unet_shapes(), **vae_shapes(), **clip_shapes()}


def _is_norm(name: str) -> bool:
    leaf = name.rsplit(".", 2)[-2]
    return leaf.startswith(("norm", "layer_norm", "final_layer_norm")) or name.endswith(
        ("in_layers.0.weight", "in_layers.0.bias", "out_layers.0.weight", "out_layers.0.bias",
         "out.0.weight", "out.0.bias"))


def _random_tensor(name: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Norms start as identity, biases at zero, other weights N(0, 1/fan_in): activations stay O(1)
    through every layer, so the random model's outputs are finite."""
    if _is_norm(name):
        return torch.ones(shape) if name.endswith(".weight") else torch.zeros(shape)
    if name.endswith(".bias"):
        return torch.zeros(shape)
    if "embedding" in name:
        return torch.randn(shape, generator=generator) * 0.02
    fan_in = math.prod(shape[1:])
    return torch.randn(shape, generator=generator) / math.sqrt(fan_in)


def tiny_sd15_state_dict(seed: int = 0, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: _random_tensor(name, shape, generator).to(dtype)
            for name, shape in checkpoint_shapes().items()}


def write_tiny_sd15(path: str | Path, seed: int = 0, dtype: torch.dtype = torch.float16) -> Path:
    """Writes the checkpoint (about 500 MB in fp16, most of it the real-sized VAE and CLIP-L)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    save_file(tiny_sd15_state_dict(seed, dtype), str(partial), metadata={"format": "pt"})
    partial.replace(path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_tiny_sd15(args.out, args.seed))


if __name__ == "__main__":
    main()
