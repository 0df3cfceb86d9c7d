"""The training loop behind `pal train` and `pal finetune`: one recipe object, resumable runs.

A run lives in one output folder:
    last.safetensors     the newest weights, a complete detector file (`load_detector` reads it)
    best.safetensors     the weights with the best validation score so far
    trainer_state.pt     optimizer, step and best score (plain tensors: torch.load(weights_only=True))
    log.jsonl            one JSON line per logged step and per validation
    recipe.json          the recipe the run was started with
Every file is written to a temporary name and renamed, so a run killed at any moment leaves the
previous checkpoint intact; `resume=True` continues from it with the same data order.

What a run learns from is a `TrainingTask`: the samples crops are cut from, how a sample's target is
read, the loss and the validation. A PAL4VST-layout folder gives the labelled-segmentation task
(`segmentation_task`); `pal_core.train.distillation` gives one that learns a teacher's probabilities.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np

import torch
import torch.nn.functional as F
from torch import nn

from .. import atomic
from ..config import SavedConfig
from ..detect.masks import DEFAULT_THRESHOLD
from ..detect.preprocess import Preprocess
from ..hub.checkpoint import DetectorCheckpoint, read_detector_file, save_detector_file
from .evaluation import PixelCounts
from .segmentation_data import (IGNORE_INDEX, CropSettings, PositionSampler, Sample, TrainingCrops, WholeImages,
                                list_samples, read_sample_label)

ENCODER_PREFIXES = ("encoder.", "backbone.")  # pretrained parts, trained at the base learning rate


@dataclass
class Recipe(SavedConfig):
    """How a detector is trained; saved in its run folder so that `--resume` continues with the same."""

    SKIPS_UNKNOWN_KEYS: ClassVar[bool] = True  # a run folder of another version resumes with what this one knows

    # Defaults: the recipe that trained the shipped weights/pal_lite.safetensors (66 min, 2-core CPU, 1 thread).
    steps: int = 4000
    batch_size: int = 8
    crop_size: int = 256
    scale_range: tuple[float, float] = (0.75, 1.25)
    lr: float = 2e-4  # encoder (base) learning rate
    head_lr_mult: float = 10.0  # decoder learning rate = lr * head_lr_mult
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    warmup_steps: int = 100
    dice_weight: float = 0.5  # 0: plain cross entropy (the paper's loss)
    val_every: int = 400
    val_limit: int | None = 96  # validate on at most this many images (evenly spread); None: all
    save_every: int = 50
    log_every: int = 10
    workers: int = 1
    seed: int = 0
    # Keep BatchNorm statistics as they are (the layers still learn their scale and shift): for runs that
    # start from a trained model with small batches, whose noisy batch statistics would otherwise drift
    # the running ones away from what the model was trained with.
    freeze_batchnorm: bool = False
    train_split: str = "train"
    val_split: str = "val"


def finetune_recipe(**overrides) -> Recipe:
    """PAL4VST's fine-tuning recipe: AdamW 6e-5, betas (0.9, 0.999), wd 0.01, head x10, cross entropy,
    random resize 0.5-2.0 of the 512 input, crop 512, flip, batch 8, linear warm-up then poly decay."""
    values = dict(lr=6e-5, head_lr_mult=10.0, betas=(0.9, 0.999), weight_decay=0.01, dice_weight=0.0,
                  crop_size=512, scale_range=(0.5, 2.0), batch_size=8, warmup_steps=1500, steps=16000,
                  val_every=500, val_limit=None, save_every=100, workers=2)
    values.update(overrides)
    values["warmup_steps"] = min(values["warmup_steps"], max(1, values["steps"] // 10))
    return Recipe(**values)


class TrainingError(RuntimeError):
    """A run that cannot start or continue as asked."""


@dataclass
class Validation:
    """One validation pass: the numbers kept in the log and checkpoint, and the score that picks the best."""

    overall: dict
    score: float  # higher is better
    line: str  # one line for the progress bar
    details: dict = field(default_factory=dict)  # more for the log


@dataclass
class TrainingTask:
    """What a run learns from: crops of `samples` with targets from `read_target` (a label or a soft
    probability map, see segmentation_data), the loss on them, and a validation (None: the last weights
    are also the best)."""

    samples: list[Sample]
    loss: Callable[[torch.Tensor, torch.Tensor, Recipe], torch.Tensor]  # (logits, targets, recipe)
    validate: Callable[[nn.Module, torch.device], Validation] | None
    description: str  # what the data is, kept in the checkpoints
    read_target: Callable[[Sample], np.ndarray] = read_sample_label


# ----------------------------------------------------------------------------------------------
# Pieces


def parameter_groups(model: nn.Module, recipe: Recipe) -> list[dict]:
    """Encoder at lr, the rest at lr * head_lr_mult; no weight decay on norms and biases (as the paper's config)."""
    groups = {(enc, decay): [] for enc in (True, False) for decay in (True, False)}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        encoder = name.startswith(ENCODER_PREFIXES)
        decay = param.ndim > 1
        groups[(encoder, decay)].append(param)
    result = []
    for (encoder, decay), params in groups.items():
        if params:
            lr = recipe.lr if encoder else recipe.lr * recipe.head_lr_mult
            result.append({"params": params, "lr": lr, "initial_lr": lr,
                           "weight_decay": recipe.weight_decay if decay else 0.0})
    return result


def learning_rate_factor(step: int, recipe: Recipe) -> float:
    """Linear warm-up, then polynomial (power 1) decay to zero at the last step."""
    if step < recipe.warmup_steps:
        return (step + 1) / recipe.warmup_steps
    progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    return max(0.0, 1.0 - progress)


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, dice_weight: float) -> torch.Tensor:
    """Cross entropy at label resolution plus (optionally) a batch-level soft Dice on the artifact class.

    Dice over the whole batch, not per image: an image with no artifact has no Dice of its own, and
    its false positives still cost through the batch's union.
    """
    logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    loss = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
    if dice_weight > 0:
        valid = (labels != IGNORE_INDEX).float()
        loss = loss + dice_weight * soft_dice_loss(torch.softmax(logits, dim=1)[:, 1] * valid,
                                                   (labels == 1).float() * valid)
    return loss


def soft_dice_loss(prob: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice over the whole batch; `truth` may itself be soft (a teacher's probabilities)."""
    return 1 - (2 * (prob * truth).sum() + 1) / (prob.sum() + truth.sum() + 1)


@torch.no_grad()
def validate(model: nn.Module, samples, preprocess: Preprocess, device: torch.device, threshold: float = DEFAULT_THRESHOLD
             ) -> dict:
    """Artifact IoU, mIoU and clean-image PAR of `model` on whole images, per task and overall."""
    was_training = model.training
    model.eval()
    tasks: dict[str, PixelCounts] = {}
    loader = torch.utils.data.DataLoader(WholeImages(samples, preprocess), batch_size=1)
    for sample, (image, label) in zip(samples, loader):
        logits = model(image.to(device))
        logits = F.interpolate(logits.float(), size=label.shape[-2:], mode="bilinear", align_corners=False)
        prob = torch.softmax(logits, dim=1)[0, 1].cpu()
        tasks.setdefault(sample.task, PixelCounts()).add(prob > threshold, label[0])
    model.train(was_training)
    total = PixelCounts()
    for counts in tasks.values():
        total.merge(counts)
    return {"overall": total.summary(), "tasks": {k: v.summary() for k, v in sorted(tasks.items())}}


def validation_score(metrics: dict) -> float:
    """Artifact IoU, minus a penalty once clean images get more than 1% flagged (the clean-PAR floor)."""
    overall = metrics["overall"]
    iou = 0.0 if math.isnan(overall["artifact_iou"]) else overall["artifact_iou"]
    par = 0.0 if math.isnan(overall["clean_par"]) else overall["clean_par"]
    return iou - 10.0 * max(0.0, par - 0.01)


def segmentation_task(data: str | os.PathLike, recipe: Recipe, preprocess: Preprocess) -> TrainingTask:
    """Labelled segmentation from a PAL4VST-layout folder: cross entropy (+ Dice), artifact IoU per task."""
    train_samples = list_samples(data, recipe.train_split)
    try:
        val_samples = spread(list_samples(data, recipe.val_split), recipe.val_limit)
    except Exception:
        val_samples = []  # no validation split

    def check(model: nn.Module, device: torch.device) -> Validation:
        metrics = validate(model, val_samples, preprocess, device)
        overall = metrics["overall"]
        return Validation(overall, validation_score(metrics),
                          f"val artifact IoU {overall['artifact_iou']:.3f}, clean PAR {overall['clean_par']:.4f}",
                          {"tasks": {k: v["artifact_iou"] for k, v in metrics["tasks"].items()}})

    def loss(logits: torch.Tensor, labels: torch.Tensor, recipe: Recipe) -> torch.Tensor:
        return segmentation_loss(logits, labels, recipe.dice_weight)

    return TrainingTask(train_samples, loss, check if val_samples else None, str(data))


def spread(items: list, limit: int | None) -> list:
    """At most `limit` items, evenly spread over the list (all of them when limit is None)."""
    if limit is None or len(items) <= limit:
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def _atomic_torch_save(obj, path: Path) -> None:
    with atomic.atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _append_log(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


# ----------------------------------------------------------------------------------------------
# The run


@dataclass
class RunResult:
    out: Path
    steps: int
    last_loss: float
    best_score: float
    seconds: float
    history: list[dict] = field(default_factory=list)


def set_training_mode(model: nn.Module, recipe: Recipe) -> None:
    model.train()
    if recipe.freeze_batchnorm:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def check_run_folder(out: str | os.PathLike, resume: bool, overwrite: bool) -> None:
    """Raises TrainingError when `out` cannot be used as asked: nothing to resume, or a run to keep."""
    out = Path(out)
    state_path, last_path = out / "trainer_state.pt", out / "last.safetensors"
    if resume:
        if not state_path.is_file() or not last_path.is_file():
            raise TrainingError(f"nothing to resume in {out}: it has no trainer_state.pt and last.safetensors. "
                                "Start a new run without --resume")
    elif (state_path.exists() or last_path.exists()) and not overwrite:
        raise TrainingError(f"{out} already holds a run; pass --resume to continue it, --overwrite to start "
                            "over there, or choose another --out")


def train(model: nn.Module, data: str | os.PathLike | TrainingTask, out: str | os.PathLike, recipe: Recipe,
          name: str, preprocess: Preprocess = Preprocess(), source: str = "", device: str | torch.device = "cpu",
          resume: bool = False, overwrite: bool = False, progress: bool = True,
          stop_after: int | None = None) -> RunResult:
    """Trains `model` on `data` (a PAL4VST-layout folder, or any TrainingTask) into the run folder `out`.

    A fresh run refuses a folder that already holds a run unless `overwrite`; `resume` continues
    the run there (the model passed in is then only the architecture: the weights come from the
    folder's last.safetensors). `stop_after` ends this call after that many steps of the run, leaving
    a checkpoint to resume from (the schedule still runs to `recipe.steps`).
    """
    out = Path(out)
    device = torch.device(device)
    state_path, last_path, best_path = out / "trainer_state.pt", out / "last.safetensors", out / "best.safetensors"
    log_path = out / "log.jsonl"
    check_run_folder(out, resume, overwrite)
    if not resume:  # a fresh run starts a fresh log (a run killed before its first checkpoint left one)
        for stale in (state_path, last_path, best_path, log_path):
            stale.unlink(missing_ok=True)

    task = data if isinstance(data, TrainingTask) else segmentation_task(data, recipe, preprocess)
    if preprocess.input_size is None:
        raise TrainingError("training needs a fixed input size (the preprocessing's input_size is None)")

    start_step, best_score = 0, -math.inf
    if resume:
        saved = read_detector_file(last_path)
        model = saved.model
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        start_step, best_score = int(state["step"]), float(state["best_score"])
        recipe = Recipe.from_dict(json.loads((out / "recipe.json").read_text()))
    model = model.to(device)
    set_training_mode(model, recipe)
    optimizer = torch.optim.AdamW(parameter_groups(model, recipe), lr=recipe.lr, betas=recipe.betas,
                                  weight_decay=recipe.weight_decay)
    if resume:
        optimizer.load_state_dict(state["optimizer"])
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        atomic.write_text(out / "recipe.json", json.dumps(recipe.to_dict(), indent=1))

    crops = TrainingCrops(task.samples, preprocess, CropSettings(recipe.crop_size, tuple(recipe.scale_range)),
                          seed=recipe.seed, read_target=task.read_target)
    loader = torch.utils.data.DataLoader(
        crops, batch_size=recipe.batch_size, sampler=PositionSampler(start_step * recipe.batch_size,
                                                                     recipe.steps * recipe.batch_size),
        num_workers=recipe.workers, persistent_workers=False, drop_last=True)

    def extra(step: int, check: Validation | None = None) -> dict:
        info = {"recipe": recipe.to_dict(), "step": step, "data": task.description}
        if check is not None:
            info["validation"] = check.overall
        return info

    def save(step: int, check: Validation | None = None) -> None:
        save_detector_file(DetectorCheckpoint(model, name, preprocess, source, extra(step, check)), last_path,
                           overwrite=True)
        _atomic_torch_save({"step": step, "best_score": best_score, "optimizer": optimizer.state_dict()}, state_path)

    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=recipe.steps, initial=start_step, desc=f"training {name}", unit="step")
    started, history, step, loss_value, running = time.time(), [], start_step, float("nan"), []
    for images, labels in loader:
        factor = learning_rate_factor(step, recipe)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        logits = model(images.to(device, non_blocking=True))
        loss = task.loss(logits, labels.to(device, non_blocking=True), recipe)
        if not torch.isfinite(loss):
            raise TrainingError(f"loss became {loss.item()} at step {step}; lower the learning rate (--lr)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        loss_value = loss.item()
        running.append(loss_value)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}")
        if step % recipe.log_every == 0 or step == recipe.steps:
            record = {"step": step, "loss": sum(running) / len(running), "lr": recipe.lr * factor,
                      "seconds": round(time.time() - started, 1)}
            running = []
            history.append(record)
            _append_log(log_path, record)
        check = None
        if task.validate is not None and (step % recipe.val_every == 0 or step == recipe.steps):
            check = task.validate(model, device)
            set_training_mode(model, recipe)
            _append_log(log_path, {"step": step, "validation": check.overall, "score": check.score, **check.details})
            if bar is not None:
                bar.write(f"step {step}: {check.line}")
            if check.score > best_score:
                best_score = check.score
                save_detector_file(DetectorCheckpoint(model, name, preprocess, source, extra(step, check)),
                                   best_path, overwrite=True)
        stopping = stop_after is not None and step >= stop_after
        if step % recipe.save_every == 0 or step == recipe.steps or check is not None or stopping:
            save(step, check)
        if stopping:
            break
    if bar is not None:
        bar.close()
    if step == start_step and start_step < recipe.steps:
        raise TrainingError("no training step ran (is the dataset empty?)")
    if task.validate is None and last_path.is_file():
        save_detector_file(read_detector_file(last_path), best_path, overwrite=True)
    return RunResult(out, step, loss_value, best_score, time.time() - started, history)
