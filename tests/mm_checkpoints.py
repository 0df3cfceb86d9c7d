"""Checkpoints with the exact structure training frameworks write, built from any state dict.

`save_mmcv1_checkpoint`: what mmcv 1.7's EvalHook (save-best) writes during an mmseg 0.x run, as the
official PAL4VST `best_mIoU_iter_*.pth` files are: pickle protocol 2 in torch's zip format, top level
`meta`, `state_dict`, `optimizer` (AdamW: `step`, `exp_avg`, `exp_avg_sq` per parameter), and `meta`
holding env_info, seed, exp_name, mmseg_version, config, CLASSES, PALETTE, hook_msgs (best_score a
numpy.float64), epoch, iter, mmcv_version, time. Its numpy globals carry numpy 1's names
(`numpy.core.multiarray.scalar`) whatever numpy writes it: the pickle's GLOBAL opcodes are rewritten.

`save_mmengine_checkpoint`: what mmengine's CheckpointHook writes for mmseg 1.x (users' own fine-tunes):
also `message_hub` (HistoryBuffer objects with numpy arrays) and `param_schedulers`, under mmengine's
own class names.
"""

from __future__ import annotations

import io
import pickle
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

PAL4VST_CONFIG_TEXT = """norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    backbone=dict(type='SwinTransformer', embed_dims=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32],
                  window_size=12, use_abs_pos_embed=False, drop_path_rate=0.3, patch_norm=True),
    decode_head=dict(type='UPerHead', in_channels=[128, 256, 512, 1024], in_index=[0, 1, 2, 3],
                     pool_scales=(1, 2, 3, 6), channels=512, dropout_ratio=0.1, num_classes=2),
    auxiliary_head=dict(type='FCNHead', in_channels=512, in_index=2, channels=256, num_classes=2))
optimizer = dict(type='AdamW', lr=6e-05, betas=(0.9, 0.999), weight_decay=0.01)
evaluation = dict(interval=400, metric='mIoU', pre_eval=True, save_best='mIoU')
"""
# Renames applied to the pickle's GLOBAL opcodes ("c<module>\n<name>\n", protocol 2).
NUMPY1_NAMES = {b"numpy._core.multiarray\nscalar\n": b"numpy.core.multiarray\nscalar\n",
                b"numpy._core.multiarray\n_reconstruct\n": b"numpy.core.multiarray\n_reconstruct\n"}


class HistoryBuffer:
    """Pickled under mmengine's name (mmengine.logging.history_buffer.HistoryBuffer), with its fields."""

    def __init__(self, values):
        self.max_length = 1000000
        self._log_history = np.asarray(values, dtype=np.float64)
        self._count_history = np.ones(len(values), dtype=np.int64)
        self._statistics_methods = {}


class ConfigDict(dict):
    """mmengine.config.config.ConfigDict: a dict subclass, pickled with its items."""


MMENGINE_NAMES = {f"{__name__}\nHistoryBuffer\n".encode(): b"mmengine.logging.history_buffer\nHistoryBuffer\n",
                  f"{__name__}\nConfigDict\n".encode(): b"mmengine.config.config\nConfigDict\n"}


def _renaming_pickle_module(renames: dict[bytes, bytes]):
    """A pickle module for torch.save whose Pickler rewrites global names in what it writes."""

    class Pickler(pickle.Pickler):
        def __init__(self, file, protocol=None, **kwargs):
            self._target, self._buffer = file, io.BytesIO()
            super().__init__(self._buffer, protocol, **kwargs)

        def dump(self, obj):
            super().dump(obj)
            data = self._buffer.getvalue()
            for old, new in renames.items():
                data = data.replace(b"c" + old, b"c" + new)  # GLOBAL is the opcode "c"
            self._target.write(data)

    return types.SimpleNamespace(Pickler=Pickler, Unpickler=pickle.Unpickler, load=pickle.load, dump=pickle.dump,
                                 __name__="pickle")


def _is_parameter(key: str, value: torch.Tensor) -> bool:
    buffers = ("running_mean", "running_var", "num_batches_tracked", "relative_position_index")
    return value.is_floating_point() and not key.endswith(buffers)


def adamw_state(state_dict: dict, iteration: int, seed: int = 0) -> dict:
    """AdamW's state_dict for the parameters of `state_dict`, as torch writes it (random moments)."""
    generator = torch.Generator().manual_seed(seed)
    params = [k for k, v in state_dict.items() if _is_parameter(k, v)]
    state = {i: {"step": torch.tensor(float(iteration)),
                 "exp_avg": torch.randn(state_dict[k].shape, generator=generator) * 1e-3,
                 "exp_avg_sq": torch.rand(state_dict[k].shape, generator=generator) * 1e-6}
             for i, k in enumerate(params)}
    group = {"lr": 6e-05, "betas": (0.9, 0.999), "eps": 1e-08, "weight_decay": 0.01, "amsgrad": False,
             "foreach": None, "maximize": False, "capturable": False, "differentiable": False, "fused": None,
             "initial_lr": 6e-05, "params": list(range(len(params)))}
    return {"state": state, "param_groups": [group]}


def save_mmcv1_checkpoint(state_dict: dict, path: Path, iteration: int = 7200, config_text: str = PAL4VST_CONFIG_TEXT,
                          numpy1_names: bool = True) -> Path:
    """Writes `state_dict` as mmcv 1.7.2's save-best hook does (see the module docstring)."""
    path = Path(path)
    meta = {
        "env_info": "sys.platform: linux\nPython: 3.8.13\nCUDA available: True\nPyTorch: 1.12.1\nMMCV: 1.7.2",
        "seed": 1046335512,
        "exp_name": "swin_large_patch4_window12_512x512_pretrain_384x384_22K_pal4vst.py",
        "mmseg_version": "0.30.0+e74c1bd",
        "config": config_text,
        "CLASSES": ("background", "artifact"),
        "PALETTE": [[0, 0, 0], [255, 255, 255]],
        "hook_msgs": {"last_ckpt": f"/work_dirs/pal4vst/iter_{iteration}.pth",
                      "best_ckpt": f"/work_dirs/pal4vst/best_mIoU_iter_{iteration}.pth",
                      "best_score": np.float64(0.6184)},
        "epoch": 3,
        "iter": iteration,
        "mmcv_version": "1.7.2",
        "time": "Tue Mar  7 08:12:41 2023",
    }
    weights = OrderedDict((k, v.detach().cpu()) for k, v in state_dict.items())
    checkpoint = {"meta": meta, "state_dict": weights, "optimizer": adamw_state(weights, iteration)}
    renames = NUMPY1_NAMES if numpy1_names else {}
    torch.save(checkpoint, path, pickle_module=_renaming_pickle_module(renames), pickle_protocol=2)
    return path


def save_mmengine_checkpoint(state_dict: dict, path: Path, iteration: int = 4800,
                             config_text: str = PAL4VST_CONFIG_TEXT) -> Path:
    """Writes `state_dict` as mmengine's CheckpointHook does for an mmseg 1.x run."""
    path = Path(path)
    meta = {"seed": 0, "experiment_name": "pal4vst_finetune", "time": "20240307_081241", "cfg": config_text,
            "mmengine_version": "0.10.7", "epoch": 0, "iter": iteration,
            "dataset_meta": {"classes": ("background", "artifact"), "palette": [[0, 0, 0], [255, 255, 255]]}}
    message_hub = {
        "log_scalars": {"train/loss": HistoryBuffer([0.71, 0.52, 0.44]), "train/lr": HistoryBuffer([6e-5, 5.9e-5])},
        "runtime_info": {"iter": iteration, "max_iters": 80000, "dataset_meta": meta["dataset_meta"],
                         "cfg": ConfigDict(model=ConfigDict(type="EncoderDecoder"))},
        "resumed_keys": {"iter": True, "max_iters": True},
        "best_score": np.float64(0.5912),  # numpy 2's names: numpy._core.multiarray.scalar
    }
    weights = OrderedDict((k, v.detach().cpu()) for k, v in state_dict.items())
    checkpoint = {"meta": meta, "state_dict": weights, "message_hub": message_hub,
                  "optimizer": adamw_state(weights, iteration),
                  "param_schedulers": [{"start_factor": 1e-06, "end_factor": 1.0, "begin": 0, "end": 1500,
                                        "last_step": iteration, "by_epoch": False,
                                        "_get_lr_called_within_step": False}]}
    torch.save(checkpoint, path, pickle_module=_renaming_pickle_module(MMENGINE_NAMES), pickle_protocol=2)
    return path


def pickle_globals(path: Path) -> set[str]:
    """The 'module.name' of every GLOBAL opcode in the checkpoint's data.pkl."""
    import pickletools
    import zipfile

    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))
    return {arg.replace(" ", ".") for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}
