"""Make reference fixtures for the PAL4VST re-implementation with mmsegmentation itself.

NOT a project dependency and NOT run in CI. It is run by hand, in a throwaway virtualenv that
reuses the system torch, to (re)generate the files under ``tests/fixtures/mmseg/``:

    python -m venv --system-site-packages /tmp/mmseg-venv      # reuses the system torch
    /tmp/mmseg-venv/bin/pip install mmsegmentation==1.2.2 mmcv-lite==2.1.0 mmengine==0.10.7 \
        ftfy regex                                              # must not pull another torch
    /tmp/mmseg-venv/bin/python tools/make_mmseg_fixture.py      # from the repository root

(`safetensors` and `numpy` come from the system site-packages. Made with torch 2.14.1 (CPU),
numpy 2.4, safetensors 0.8.) mmcv-lite has no compiled ops; mmseg imports some at start-up but
Swin, UPerHead and FCNHead never call them, so this script installs a stand-in ``mmcv._ext``
whose functions raise.

For each model config K (see ``CONFIGS``) it builds, with mmseg's registry, an EncoderDecoder
(SwinTransformer backbone + UPerHead + FCNHead auxiliary head), randomises every parameter and the
BatchNorm running statistics, and writes

* ``<K>.pth``: ``{'meta': {...plain python types...}, 'state_dict': model.state_dict()}``, the
  layout of an mmseg 1.x checkpoint; loadable with ``torch.load(..., weights_only=True)``.
* ``<K>.cases.safetensors``: for each case C of the config: ``C.image`` (uint8 RGB [H,W,3], fed
  at its own size after mean/std normalisation, no resize), ``C.stage0``..``C.stage3``
  (``model.backbone(x)``), ``C.decode`` (``model.decode_head(feats)``), ``C.logits``
  (``model.encode_decode(x, metas)``, i.e. the decode logits resized bilinearly, align_corners=False,
  to the input size); see NOT_STORED for what is left out. Metadata (strings): ``config`` (the model
  config as JSON), ``cases`` (JSON {name: [H, W]}), versions.

Everything is seeded; running it twice on the same machine with the same ``--threads`` (default 2)
gives byte-identical files. (Another thread count changes the BatchNorm statistics measured on the
calibration batch, and so the head outputs, at the 1e-6..1e-5 level.)
"""
from __future__ import annotations

import argparse
import copy
import json
import struct
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def _install_mmcv_ext_stand_in() -> None:
    """mmcv-lite lacks the compiled ``mmcv._ext``; give mmseg's import something to find."""
    if 'mmcv._ext' in sys.modules:
        return
    mod = types.ModuleType('mmcv._ext')

    def __getattr__(name):  # PEP 562: any op name "exists", calling it raises
        if name.startswith('__'):
            raise AttributeError(name)

        def _missing(*args, **kwargs):
            raise RuntimeError(f'mmcv._ext.{name}: compiled op not available (mmcv-lite stand-in)')

        _missing.__name__ = name
        return _missing

    mod.__getattr__ = __getattr__
    sys.modules['mmcv._ext'] = mod


_install_mmcv_ext_stand_in()

import mmcv  # noqa: E402
import mmengine  # noqa: E402
import mmseg  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmseg.registry import MODELS  # noqa: E402
from mmseg.utils import register_all_modules  # noqa: E402
from safetensors.torch import save as st_save  # noqa: E402

MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)

# name: (H, W); every image is fed at its own size (no resize).
CASES = {
    's512': (512, 512),
    'odd': (203, 301),  # not a multiple of 4 nor 32: patch-embed, merging and window padding
    'wide': (96, 160),
}


def _model_cfg(embed_dims, depths, num_heads, window_size, head_channels, aux_in, aux_channels,
               pool_scales=(1, 2, 3, 6)):
    """Same structure as the official PAL4VST config (mmseg upernet_swin), scaled down."""
    norm_cfg = dict(type='BN', requires_grad=True)  # official: SyncBN; BN so it runs on CPU
    backbone_norm_cfg = dict(type='LN', requires_grad=True)
    in_channels = [embed_dims * 2 ** i for i in range(4)]
    return dict(
        type='EncoderDecoder',
        pretrained=None,
        backbone=dict(
            type='SwinTransformer',
            pretrain_img_size=384,
            embed_dims=embed_dims,
            patch_size=4,
            window_size=window_size,
            mlp_ratio=4,
            depths=depths,
            num_heads=num_heads,
            strides=(4, 2, 2, 2),
            out_indices=(0, 1, 2, 3),
            qkv_bias=True,
            qk_scale=None,
            patch_norm=True,
            drop_rate=0.0,
            attn_drop_rate=0.0,
            drop_path_rate=0.3,
            use_abs_pos_embed=False,
            act_cfg=dict(type='GELU'),
            norm_cfg=backbone_norm_cfg),
        decode_head=dict(
            type='UPerHead',
            in_channels=in_channels,
            in_index=[0, 1, 2, 3],
            pool_scales=pool_scales,
            channels=head_channels,
            dropout_ratio=0.1,
            num_classes=2,
            norm_cfg=norm_cfg,
            align_corners=False,
            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
        auxiliary_head=dict(
            type='FCNHead',
            in_channels=aux_in,
            in_index=2,
            channels=aux_channels,
            num_convs=1,
            concat_input=False,
            dropout_ratio=0.1,
            num_classes=2,
            norm_cfg=norm_cfg,
            align_corners=False,
            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))


CONFIGS = {
    # PAL4VST: Swin-B embed 128, depths (2,2,18,2), heads (4,8,16,32), window 12, UPerHead 512.
    # Kept narrow so that both fixtures together stay under 10 MB; swin_w7 has odd depths (a stage of
    # one block has no shifted window; three blocks end on a shifted one) and pool scales of its own.
    'swin_w12': dict(seed=12, cases=('s512', 'odd', 'wide'),
                     model=_model_cfg(16, (2, 2, 2, 2), (1, 2, 4, 8), 12, 32, 64, 16)),
    'swin_w7': dict(seed=7, cases=('odd', 'wide'),
                    model=_model_cfg(8, (1, 1, 3, 1), (1, 2, 4, 8), 7, 24, 32, 8, pool_scales=(1, 2, 4))),
}
# Not stored, to keep the fixtures under 10 MB: the input (the test recomputes it from the stored image),
# the auxiliary head (dropped at load), and the full-resolution maps of the 512x512 case (its finest
# stages and the final resize are covered by the other cases; its `decode` covers the whole network).
NOT_STORED = ('input', 'aux')
NOT_STORED_AT_512 = ('stage0', 'stage1', 'logits')


def make_image(h: int, w: int, seed: int) -> np.ndarray:
    """Deterministic, smooth-ish uint8 RGB image: low-frequency noise + gradients + fine noise."""
    rng = np.random.default_rng(seed)
    low = torch.from_numpy(rng.normal(0.0, 1.0, size=(1, 3, 8, 8)).astype(np.float32))
    low = F.interpolate(low, size=(h, w), mode='bicubic', align_corners=False)[0].numpy()
    yy, xx = np.meshgrid(np.linspace(0.0, 1.0, h), np.linspace(0.0, 1.0, w), indexing='ij')
    grad = np.stack([xx, yy, 1.0 - 0.5 * (xx + yy)]).astype(np.float32)
    img = 128.0 + 45.0 * low + 70.0 * (grad - 0.5) + rng.normal(0.0, 12.0, size=(3, h, w))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8).transpose(1, 2, 0).copy()


def normalise(image: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(image).permute(2, 0, 1).float()[None]
    mean = torch.tensor(MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


@torch.no_grad()
def randomise(model: nn.Module, seed: int) -> None:
    """Give every parameter a random value that matters; then BN running stats (see below)."""
    from mmseg.models.backbones.swin import WindowMSA

    g = torch.Generator().manual_seed(seed)

    def normal(t, mean, std):
        t.copy_(torch.randn(t.shape, generator=g) * std + mean)

    def uniform(t, lo, hi):
        t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)

    done = set()
    for name, m in model.named_modules():
        own = dict(m.named_parameters(recurse=False))
        if not own:
            continue
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            fan_in = m.weight[0].numel()
            normal(m.weight, 0.0, 1.0 / fan_in ** 0.5)
            if m.bias is not None:
                normal(m.bias, 0.0, 0.2)
        elif isinstance(m, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm)):
            uniform(m.weight, 0.5, 1.5)
            normal(m.bias, 0.0, 0.2)
        elif isinstance(m, WindowMSA):
            normal(m.relative_position_bias_table, 0.0, 0.5)
        else:
            raise TypeError(f'unhandled module with parameters: {name} ({type(m).__name__})')
        done.update(f'{name}.{p}' if name else p for p in own)
    missing = {n for n, _ in model.named_parameters()} - done
    if missing:
        raise RuntimeError(f'parameters not randomised: {sorted(missing)}')

    # BatchNorm running statistics: measure them on calibration images (so the heads see
    # activations of sensible scale), then perturb them so they are not the "true" statistics.
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
        bn.train()
    calib = torch.cat([normalise(make_image(128, 160, seed * 1000 + i)) for i in range(4)])
    model.encode_decode(calib, [dict(img_shape=(128, 160), ori_shape=(128, 160),
                                     pad_shape=(128, 160))] * 4)
    for bn in bns:
        bn.eval()
        bn.momentum = 0.1
        # Floor: e.g. the pool-scale-1 PPM branch sees almost no variance across the calibration
        # batch; a tiny running_var would amplify float32 rounding differences in the reference.
        bn.running_var.clamp_(min=0.05)
        std = bn.running_var.sqrt()
        bn.running_mean.add_(torch.randn(bn.running_mean.shape, generator=g) * 0.2 * std)
        bn.running_var.mul_(torch.rand(bn.running_var.shape, generator=g) * 0.9 + 0.6)
        assert bool((bn.running_var > 0).all())

    other = [n for n, _ in model.named_buffers()
             if not n.endswith(('running_mean', 'running_var', 'num_batches_tracked',
                                'relative_position_index'))]
    if other:
        raise RuntimeError(f'unexpected buffers: {other}')


def safetensors_bytes(tensors: dict, metadata: dict) -> bytes:
    """safetensors serialisation with the metadata entries in sorted order.

    safetensors keeps ``__metadata__`` in a hash map, so its order (and the file's bytes) changes
    from run to run; rewrite the JSON header with sorted metadata so the output is reproducible.
    """
    blob = st_save(tensors, metadata=metadata)
    n = struct.unpack('<Q', blob[:8])[0]
    raw = blob[8:8 + n]
    header = json.loads(raw, object_pairs_hook=dict)
    compact = lambda h: json.dumps(h, separators=(',', ':'), ensure_ascii=False).encode()  # noqa
    assert compact(header) == raw.rstrip(b' '), 'unexpected safetensors header format'
    header['__metadata__'] = dict(sorted(header['__metadata__'].items()))
    new = compact(header)
    assert len(new) <= n
    return blob[:8] + new + b' ' * (n - len(new)) + blob[8 + n:]


def build(model_cfg: dict) -> nn.Module:
    register_all_modules(init_default_scope=True)
    model = MODELS.build(copy.deepcopy(model_cfg))
    model.eval()
    return model


def make_meta(key: str, cfg_text: str, seed: int) -> dict:
    # Like mmengine's runner writes (it stores the config text under 'cfg'); plain types only.
    return {
        'mmseg_version': mmseg.__version__,
        'mmcv_version': mmcv.__version__,
        'mmengine_version': mmengine.__version__,
        'torch_version': torch.__version__.split('+')[0],
        'cfg': cfg_text,
        'config': cfg_text,
        'dataset_meta': {'classes': ['background', 'artifact'],
                         'palette': [[0, 0, 0], [255, 255, 255]]},
        'experiment_name': f'pal_nodes_fixture_{key}',
        'seed': seed,
        'epoch': 0,
        'iter': 0,
        'note': 'Randomly initialised test fixture made by tools/make_mmseg_fixture.py; '
                'not a trained PAL4VST model.',
    }


@torch.no_grad()
def make_fixture(key: str, spec: dict, out_dir: Path, cases: dict = CASES) -> None:
    seed = spec['seed']
    torch.manual_seed(seed)
    model = build(spec['model'])
    randomise(model, seed)
    model.eval()

    cfg_text = Config(dict(model=spec['model'])).pretty_text
    ckpt = {'meta': make_meta(key, cfg_text, seed), 'state_dict': model.state_dict()}
    pth = out_dir / f'{key}.pth'
    torch.save(ckpt, pth)
    back = torch.load(pth, map_location='cpu', weights_only=True)
    assert back['meta'] == ckpt['meta']
    assert list(back['state_dict']) == list(ckpt['state_dict'])
    for k, v in ckpt['state_dict'].items():
        assert torch.equal(back['state_dict'][k], v), k

    tensors = {}
    cases = {c: hw for c, hw in cases.items() if c in spec['cases']}
    for case, (h, w) in cases.items():
        image = make_image(h, w, seed * 100 + list(CASES).index(case))
        x = normalise(image)
        feats = model.backbone(x)
        assert len(feats) == 4
        decode = model.decode_head(feats)
        aux = model.auxiliary_head(feats)
        metas = [dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w))]
        logits = model.encode_decode(x, metas)
        out = {'image': torch.from_numpy(image), 'input': x, 'decode': decode, 'aux': aux,
               'logits': logits}
        out.update({f'stage{i}': f for i, f in enumerate(feats)})
        for name, t in out.items():
            if name in NOT_STORED or (case == 's512' and name in NOT_STORED_AT_512):
                continue
            if name != 'image':
                assert t.dtype == torch.float32 and torch.isfinite(t).all(), (case, name)
            tensors[f'{case}.{name}'] = t.contiguous()
        shapes = ' '.join(f'{n}={list(out[n].shape)}' for n in
                          ('stage0', 'stage1', 'stage2', 'stage3', 'decode', 'aux', 'logits'))
        print(f'{key}/{case}: {shapes}')

    metadata = {
        'config': json.dumps(spec['model'], sort_keys=True),
        'cases': json.dumps({k: list(v) for k, v in cases.items()}),
        'seed': str(seed),
        'mean': json.dumps(MEAN),
        'std': json.dumps(STD),
        'mmseg_version': mmseg.__version__,
        'mmcv_version': mmcv.__version__,
        'mmengine_version': mmengine.__version__,
        'torch_version': torch.__version__.split('+')[0],
    }
    (out_dir / f'{key}.cases.safetensors').write_bytes(safetensors_bytes(tensors, metadata))
    n_params = sum(v.numel() for v in model.state_dict().values())
    print(f'{key}: wrote {pth.name} ({pth.stat().st_size} bytes, {n_params} state values) and '
          f'{key}.cases.safetensors ({(out_dir / f"{key}.cases.safetensors").stat().st_size} bytes)')


def main() -> None:
    default_out = Path(__file__).resolve().parent.parent / 'tests' / 'fixtures' / 'mmseg'
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--out', type=Path, default=default_out)
    p.add_argument('--only', nargs='*', choices=sorted(CONFIGS), default=None)
    p.add_argument('--cases', nargs='*', choices=list(CASES), default=None,
                   help='subset of the cases (default: all)')
    p.add_argument('--threads', type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    for key in args.only or CONFIGS:
        cases = {c: CASES[c] for c in (args.cases or CASES)}
        make_fixture(key, CONFIGS[key], args.out, cases)


if __name__ == '__main__':
    main()
