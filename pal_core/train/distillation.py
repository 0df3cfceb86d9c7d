"""Distillation: a small, fast student learns to reproduce any detector (the teacher) on the user's images.

The teacher labels the images, so no human labels are needed: its artifact probabilities are computed
once and cached (`TeacherCache`); the student trains on them as soft targets through the common
training loop (`pal_core.train.training`), optionally mixed with labelled synthetic data that keeps clean
images clean; it is validated on a held-out share of the images by how well it agrees with the teacher
(`Agreement`: mask IoU at the threshold, Spearman correlation of the images' PAR, mean PAR
difference). The student file records its teacher, the agreement and both models' speed, measured in
the same run.

Teacher cache, one folder per teacher identity (weights' sha256, input size, preprocessing, precision,
map size), so a re-run or a second student never runs the teacher again:
    CACHE/<teacher key>/teacher.json                 what the key stands for
    CACHE/<teacher key>/<ab>/<image sha256>.png      probability x 255 at map_size x map_size, 8-bit grey
Images are keyed by the sha256 of their file's bytes: a renamed or moved image still hits, an edited
one does not. Every map is written to a temporary name and renamed, so an interrupted fill leaves only
whole maps and the next run computes the rest.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .. import atomic
from ..detect.detector import Detector, DetectorInfo
from ..detect.devices import resolve_device
from ..detect.masks import DEFAULT_THRESHOLD, check_threshold
from ..hub.checkpoint import DetectorCheckpoint, read_detector_file, save_detector_file
from ..hub.loading import DEFAULT_MODEL, load_detector, read_checkpoint
from ..imageio import ImageReadError, list_images, read_image, write_png
from ..outputs import check_output_file, check_output_folder
from .evaluation import PixelCounts
from .segmentation_data import Sample, list_samples, read_label
from .training import (Recipe, RunResult, TrainingTask, Validation, check_run_folder, soft_dice_loss, spread,
                       train)

DEFAULT_MAP_SIZE = 256
MIN_MAP_SIZE, MAX_MAP_SIZE = 16, 2048  # 2048: 4 MB per map in memory, far above any use (the student trains at 512)
CACHE_ENV = "PAL_CACHE_DIR"
CACHE_FORMAT = 1
TEACHER_TASK, SYNTHETIC_TASK = "teacher", "synthetic"  # targets: a teacher map; a hard label
MIN_HELD_OUT = 2  # a rank correlation needs at least two images


class DistillationError(RuntimeError):
    """Distillation cannot start or continue as asked (the message says why and what to do)."""


def default_cache_dir() -> Path:
    """$PAL_CACHE_DIR/teacher, else $XDG_CACHE_HOME/pal/teacher, else ~/.cache/pal/teacher."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]) / "teacher"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pal" / "teacher"


def distill_recipe(fresh_student: bool = False, **overrides) -> Recipe:
    """Defaults for a student that starts from the shipped pal_lite: its crops and loss, a gentler
    learning rate and BatchNorm statistics kept (it already knows what artifacts look like), 1000 steps
    (~20 min on a 2-core CPU). A fresh student (ImageNet encoder or random weights) learns its BatchNorm
    statistics and takes `pal train`'s learning rate, 2e-4: it has everything to learn."""
    values = dict(steps=1000, batch_size=8, crop_size=256, scale_range=(0.75, 1.25), lr=1e-4, head_lr_mult=10.0,
                  warmup_steps=50, dice_weight=0.5, val_every=200, val_limit=64, save_every=50, freeze_batchnorm=True)
    if fresh_student:
        values.update(lr=2e-4, freeze_batchnorm=False)
    values.update(overrides)
    return Recipe(**values)


@dataclass(frozen=True)
class DistillSettings:
    threshold: float = DEFAULT_THRESHOLD  # probability above which a pixel counts as an artifact (for the agreement)
    held_out_share: float = 0.1  # of the user's images, kept out of training to measure agreement
    map_size: int = DEFAULT_MAP_SIZE  # teacher maps are cached at this square size
    synthetic: str | None = None  # a PAL4VST-layout dataset (e.g. `pal prepare-data`) mixed into training
    synthetic_share: float = 0.25  # of the training samples, when `synthetic` is given
    speed_images: int = 8  # held-out images both models are timed on at the end

    def __post_init__(self):  # checked before anything runs
        problems = []
        try:
            check_threshold(self.threshold)
        except ValueError as error:
            problems.append(str(error))
        if not 0 < self.held_out_share < 1:
            problems.append(f"the held-out share must be between 0 and 1, not {self.held_out_share}")
        if not 0 < self.synthetic_share < 1:
            problems.append(f"the synthetic share must be between 0 and 1, not {self.synthetic_share}")
        if (problem := map_size_problem(self.map_size)) is not None:
            problems.append(problem)
        if self.speed_images < 1:
            problems.append(f"at least one image is needed to time the models, not {self.speed_images}")
        if problems:
            raise DistillationError("; ".join(problems))


def map_size_problem(map_size: int) -> str | None:
    """Why a teacher-map size cannot be used, or None (a huge one would take the memory and disk of all maps)."""
    if isinstance(map_size, bool) or not isinstance(map_size, int) or not MIN_MAP_SIZE <= map_size <= MAX_MAP_SIZE:
        return f"the teacher map size must be from {MIN_MAP_SIZE} to {MAX_MAP_SIZE} pixels, not {map_size}"
    return None


# ----------------------------------------------------------------------------------------------
# The user's images


@dataclass(frozen=True)
class UserImage:
    path: Path
    key: str  # sha256 of the file's bytes


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def list_user_images(paths: Sequence[str | os.PathLike]) -> list[UserImage]:
    """The image files in `paths` (files, folders searched recursively), each content once."""
    files = list_images([Path(p).expanduser() for p in paths])
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise DistillationError(f"{missing[0]}: no such file or folder ({len(missing)} such paths in --images)")
    seen: dict[str, UserImage] = {}
    for path in files:
        key = file_sha256(path)
        seen.setdefault(key, UserImage(path, key))
    if not seen:
        raise DistillationError(f"no image files (.png, .jpg, .webp, ...) in {', '.join(map(str, paths))}")
    return list(seen.values())


def split_held_out(images: list[UserImage], share: float) -> tuple[list[UserImage], list[UserImage]]:
    """(train, held out). An image is held out when its content hash falls in the lowest `share` of the
    hash range, so adding images never moves one to the other side; at least two are held out."""
    if not 0 < share < 1:
        raise DistillationError(f"the held-out share must be between 0 and 1, not {share}")
    if len(images) < 2 * MIN_HELD_OUT:
        raise DistillationError(f"{len(images)} distinct images: distillation needs at least {2 * MIN_HELD_OUT} "
                                f"({MIN_HELD_OUT} are held out to measure agreement); give more images")
    ordered = sorted(images, key=lambda image: image.key)
    held = sum(1 for image in ordered if int(image.key[:8], 16) < share * 16 ** 8)
    held = min(max(held, MIN_HELD_OUT), len(images) - MIN_HELD_OUT)
    return ordered[held:], ordered[:held]


# ----------------------------------------------------------------------------------------------
# Teacher maps


def weights_sha256(model: nn.Module) -> str:
    """A digest of a network's tensors, for a teacher that was not loaded from a file."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def teacher_identity(teacher: Detector, map_size: int) -> dict:
    """Everything the cached maps depend on (the key is a hash of all of it but the name)."""
    source = Path(teacher.info.source)
    weights = {"file_sha256": file_sha256(source)} if source.is_file() else {"weights_sha256": weights_sha256(teacher.model)}
    return {"name": teacher.name, **weights, "format": teacher.info.format, "architecture": teacher.info.architecture,
            "input_size": teacher.input_size, "mean": list(teacher.preprocess.mean),
            "std": list(teacher.preprocess.std), "dtype": str(teacher.dtype).removeprefix("torch."),
            "map_size": map_size, "cache_format": CACHE_FORMAT}


def probability_maps(detector: Detector, images: Sequence[UserImage], size: int
                     ) -> Iterator[tuple[UserImage, np.ndarray | ImageReadError]]:
    """(image, uint8 [size, size] map of probability x 255) per image, or the read error; in batches of
    the detector's batch size. Teacher and student maps are made by this one function, so they compare."""
    for start in range(0, len(images), detector.batch_size):
        chunk, frames, errors = images[start:start + detector.batch_size], [], {}
        for image in chunk:
            try:
                frames.append(read_image(image.path))
            except ImageReadError as error:
                errors[image.key] = error
        probs = iter(detector.predict(frames) if frames else [])
        for image in chunk:
            if image.key in errors:
                yield image, errors[image.key]
                continue
            prob = next(probs).float().cpu().numpy()
            shrink = prob.shape[0] >= size and prob.shape[1] >= size
            prob = cv2.resize(prob, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            yield image, np.clip(np.rint(prob * 255.0), 0, 255).astype(np.uint8)


@dataclass
class CacheReport:
    computed: int
    reused: int
    unreadable: list[tuple[str, str]]  # (path, why)
    teacher_seconds: float  # spent running the teacher (and reading images) in this call
    bytes_per_image: float  # mean size of the cached maps of these images

    def to_dict(self) -> dict:
        return asdict(self)


class TeacherCache:
    """One teacher's probability maps for image contents, as 8-bit PNGs under `root/<teacher key>/`."""

    def __init__(self, root: str | os.PathLike, teacher: Detector, map_size: int = DEFAULT_MAP_SIZE):
        if (problem := map_size_problem(map_size)) is not None:
            raise DistillationError(problem)
        self.teacher = teacher
        self.map_size = map_size
        self.identity = teacher_identity(teacher, map_size)
        keyed = {k: v for k, v in self.identity.items() if k != "name"}
        self.key = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]
        self.folder = Path(root) / self.key

    def path(self, image: UserImage) -> Path:
        return self.folder / image.key[:2] / f"{image.key}.png"

    def read(self, image: UserImage) -> np.ndarray:
        """The teacher's map of `image`: uint8 [map_size, map_size], probability x 255."""
        return read_map(self.path(image), self.map_size)

    def has(self, image: UserImage) -> bool:
        """Whether a usable map of `image` is stored: a truncated or damaged one (a killed run, a full disk,
        another program) is computed again rather than failing the training later."""
        try:
            self.read(image)
        except (OSError, DistillationError):
            return False
        return True

    def fill(self, images: Sequence[UserImage], progress: bool = True) -> CacheReport:
        """Runs the teacher on the images that have no map yet; returns what was done."""
        self.folder.mkdir(parents=True, exist_ok=True)
        about = self.folder / "teacher.json"
        if not about.is_file():
            atomic.write_text(about, json.dumps(self.identity, indent=1))
        todo = [image for image in images if not self.has(image)]
        unreadable: list[tuple[str, str]] = []
        started = time.perf_counter()
        bar = None
        if progress and todo:
            from tqdm import tqdm
            bar = tqdm(total=len(todo), desc=f"teacher {self.teacher.name}", unit="img")
        for image, result in probability_maps(self.teacher, todo, self.map_size):
            if isinstance(result, ImageReadError):
                unreadable.append((str(image.path), str(result)))
            else:
                write_png(self.path(image), result, overwrite=True)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        stored = [self.path(image).stat().st_size for image in images if self.path(image).is_file()]
        return CacheReport(len(todo) - len(unreadable), len(images) - len(todo), unreadable,
                           time.perf_counter() - started, sum(stored) / len(stored) if stored else 0.0)


def read_map(path: Path, size: int) -> np.ndarray:
    try:
        with Image.open(path) as img:
            values = np.asarray(img)
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:  # Pillow's damaged-file errors
        raise DistillationError(f"{path}: a damaged teacher map ({error}); delete it and run again to recompute "
                                "it") from error
    if values.shape != (size, size) or values.dtype != np.uint8:
        raise DistillationError(f"{path}: a damaged teacher map ({values.shape}, {values.dtype}); delete it and "
                                "run again to recompute it")
    return values


# ----------------------------------------------------------------------------------------------
# Agreement between student and teacher


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (ties share their mean rank); NaN when either side is constant."""
    ra, rb = _ranks(a), _ranks(b)
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(values: Sequence[float]) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    ranks = np.empty(len(values))
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    _, groups = np.unique(values, return_inverse=True)
    return (np.bincount(groups, ranks) / np.bincount(groups))[groups]


@dataclass
class Agreement:
    """How closely a student reproduces its teacher on held-out images (maps at the cache's size)."""

    images: int
    threshold: float
    mask_iou: float  # artifact pixels of both / of either, summed over all images
    par_spearman: float  # rank correlation of the images' PAR: does the student order images as the teacher does?
    par_mean_abs_diff: float
    teacher_par: float  # mean PAR
    student_par: float

    @property
    def score(self) -> float:
        """Higher is better: mask IoU (0 when neither finds anything) minus the mean PAR difference."""
        return (0.0 if math.isnan(self.mask_iou) else self.mask_iou) - self.par_mean_abs_diff

    def line(self) -> str:
        return (f"agreement with the teacher: mask IoU {self.mask_iou:.3f}, PAR Spearman {self.par_spearman:.3f}, "
                f"PAR mean abs diff {self.par_mean_abs_diff:.4f}")

    def to_dict(self) -> dict:
        return asdict(self)


def measure_agreement(student: Detector, images: Sequence[UserImage], cache: TeacherCache,
                      threshold: float = DEFAULT_THRESHOLD) -> Agreement:
    """Student maps against the cached teacher maps of `images`, both at the cache's size."""
    level = threshold * 255.0
    counts, teacher_par, student_par = PixelCounts(), [], []
    for image, result in probability_maps(student, images, cache.map_size):
        if isinstance(result, ImageReadError):
            raise DistillationError(f"held-out image no longer readable: {result}")
        teacher_mask, student_mask = cache.read(image) > level, result > level
        counts.add(student_mask, teacher_mask.astype(np.uint8))
        teacher_par.append(float(teacher_mask.mean()))
        student_par.append(float(student_mask.mean()))
    diff = np.abs(np.subtract(teacher_par, student_par))
    return Agreement(len(teacher_par), threshold, counts.artifact_iou, spearman(teacher_par, student_par),
                     float(diff.mean()), float(np.mean(teacher_par)), float(np.mean(student_par)))


@dataclass
class SpeedComparison:
    """Median seconds per image of both models, one image per call, timed alternately in one run."""

    images: int
    device: str
    teacher_seconds: float
    student_seconds: float

    @property
    def speedup(self) -> float:
        return self.teacher_seconds / self.student_seconds

    def to_dict(self) -> dict:
        return {**asdict(self), "speedup": self.speedup}


def compare_speed(teacher: Detector, student: Detector, images: Sequence[UserImage]) -> SpeedComparison:
    """Times teacher and student on the same images, alternating, so machine load hits both alike."""
    frames = [read_image(image.path).unsqueeze(0) for image in images]
    if not frames:
        raise DistillationError("no images to time the models on")
    times: dict[str, list[float]] = {"teacher": [], "student": []}
    for detector in (teacher, student):
        detector.predict(frames[0])  # warm-up: first-call allocations and kernel choices
    for frame in frames:
        for role, detector in (("teacher", teacher), ("student", student)):
            _synchronize(detector.device)
            start = time.perf_counter()
            detector.predict(frame)
            _synchronize(detector.device)
            times[role].append(time.perf_counter() - start)
    return SpeedComparison(len(frames), str(student.device), statistics.median(times["teacher"]),
                           statistics.median(times["student"]))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------
# Training the student


def artifact_logit(logits: torch.Tensor) -> torch.Tensor:
    """[B, 2, h, w] class logits -> [B, h, w] logit of 'artifact' (softmax over two = sigmoid of the difference)."""
    if logits.shape[1] == 1:
        return logits[:, 0]
    if logits.shape[1] == 2:
        return logits[:, 1] - logits[:, 0]
    raise DistillationError(f"the student has {logits.shape[1]} classes; a student must have 2 (class 1 = artifact)")


def distillation_loss(logits: torch.Tensor, targets: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    """Binary cross entropy of the student's artifact probability against the teacher's probability
    (soft targets; hard 0/1 labels for synthetic samples), NaN pixels ignored, plus soft Dice."""
    logits = F.interpolate(logits.float(), size=targets.shape[-2:], mode="bilinear", align_corners=False)
    score = artifact_logit(logits)
    valid = ~torch.isnan(targets)
    target = torch.nan_to_num(targets)
    loss = F.binary_cross_entropy_with_logits(score[valid], target[valid])
    if recipe.dice_weight > 0:
        loss = loss + recipe.dice_weight * soft_dice_loss(torch.sigmoid(score) * valid, target * valid)
    return loss


def read_target(sample: Sample) -> np.ndarray:
    """float32 in 0..1: a synthetic sample's label, or the teacher's cached map."""
    if sample.task == SYNTHETIC_TASK:
        return read_label(sample.label).astype(np.float32)
    with Image.open(sample.label) as img:
        return np.asarray(img, dtype=np.float32) / 255.0


def synthetic_samples(data: str | os.PathLike, teacher_samples: int, share: float, seed: int) -> list[Sample]:
    """Labelled samples from data/images/train, as many as make up `share` of the training samples."""
    available = list_samples(data, "train")
    wanted = min(len(available), round(teacher_samples * share / (1 - share)))
    chosen = np.random.default_rng([seed, 2]).choice(len(available), size=wanted, replace=False)
    return [Sample(available[i].image, available[i].label, SYNTHETIC_TASK) for i in sorted(chosen)]


def distillation_task(train_images: list[UserImage], held_out: list[UserImage], cache: TeacherCache,
                      recipe: Recipe, settings: DistillSettings, student_name: str, preprocess) -> TrainingTask:
    samples = [Sample(image.path, cache.path(image), TEACHER_TASK) for image in train_images]
    if settings.synthetic:
        samples += synthetic_samples(settings.synthetic, len(samples), settings.synthetic_share, recipe.seed)
    checked = spread(held_out, recipe.val_limit)

    def check(model: nn.Module, device: torch.device) -> Validation:
        info = DetectorInfo(student_name, "training", "in-memory", model.architecture)
        agreement = measure_agreement(Detector(model, info, preprocess,
                                               device=device), checked, cache, settings.threshold)
        return Validation(agreement.to_dict(), agreement.score, agreement.line())

    described = f"distilled from {cache.identity['name']} on {len(train_images)} images"
    if settings.synthetic:
        described += f" + {len(samples) - len(train_images)} synthetic samples from {settings.synthetic}"
    return TrainingTask(samples, distillation_loss, check, described, read_target)


# ----------------------------------------------------------------------------------------------
# The whole job


@dataclass
class DistillResult:
    out: Path | None  # the student file; None when the run stopped early (stop_after) and can be resumed
    run: RunResult
    report: dict  # what the student file records: teacher, images, cache, agreement, speed


def distill(teacher: Detector | str | os.PathLike, images: Sequence[str | os.PathLike], out: str | os.PathLike, *,
            student: DetectorCheckpoint | str | os.PathLike | None = None, name: str | None = None,
            recipe: Recipe | None = None, settings: DistillSettings = DistillSettings(),
            cache_dir: str | os.PathLike | None = None, run_dir: str | os.PathLike | None = None,
            device: str | torch.device | None = None, resume: bool = False, overwrite: bool = False,
            progress: bool = True, stop_after: int | None = None) -> DistillResult:
    """Trains `student` (default: the shipped pal_lite) to reproduce `teacher` on `images`; writes `out`.

    teacher: a loaded Detector, or anything `load_detector` takes (a file, a name). The run's
    checkpoints go to `run_dir` (default `<out>.run/` beside `out`), where `resume=True` continues an
    interrupted run; `stop_after` ends this call after that many steps (the file `out` is then not
    written yet). `overwrite` allows replacing an existing `out` and starting over in `run_dir`.
    """
    out = Path(out)
    if out.suffix != ".safetensors":
        raise DistillationError(f"{out}: the student is written as .safetensors; name it {out.stem}.safetensors")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; choose another --out or pass --overwrite")
    run_dir = Path(run_dir) if run_dir is not None else out.with_name(out.stem + ".run")
    check_run_folder(run_dir, resume, overwrite)
    places = [check_output_file(out, "--out"), check_output_folder(run_dir, "the run folder (--run-dir)"),
              check_output_folder(Path(cache_dir or default_cache_dir()), "the teacher cache (--cache)")]
    if problems := [p for p in places if p]:  # found before the teacher pass and the training, not after
        raise DistillationError("nothing was done: " + "; ".join(problems))
    if (problem := map_size_problem(settings.map_size)) is not None:
        raise DistillationError(problem)
    recipe = recipe or distill_recipe()
    torch_device = resolve_device(device)
    if not isinstance(teacher, Detector):
        teacher = load_detector(teacher, device=torch_device)
    start = _student_checkpoint(student)
    if start.preprocess.input_size is None:
        raise DistillationError("the student needs a fixed input size (its preprocessing's input_size is None)")
    name = name or out.stem

    found = list_user_images(images)
    split_held_out(found, settings.held_out_share)  # too few images: say so before the teacher runs
    cache = TeacherCache(cache_dir or default_cache_dir(), teacher, settings.map_size)
    cached = cache.fill(found, progress)
    bad = {path for path, _ in cached.unreadable}
    train_images, held_out = split_held_out([i for i in found if str(i.path) not in bad], settings.held_out_share)

    start_file = run_dir / "start_agreement.json"
    if resume and start_file.is_file():
        start_agreement = json.loads(start_file.read_text())
    else:
        start_agreement = measure_agreement(_as_detector(start, torch_device), held_out, cache,
                                            settings.threshold).to_dict()
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_text(start_file, json.dumps(start_agreement, indent=1))

    task = distillation_task(train_images, held_out, cache, recipe, settings, name, start.preprocess)
    source = f"distilled by `pal distill` from {teacher.info.source} ({start.name} as the start)"
    run = train(start.model, task, run_dir, recipe, name, start.preprocess, source, torch_device, resume=resume,
                overwrite=overwrite, progress=progress, stop_after=stop_after)
    planned = Recipe.from_dict(json.loads((run_dir / "recipe.json").read_text())).steps  # a resumed run keeps its own
    report = {
        "teacher": {**cache.identity, "source": teacher.info.source},
        "student": {"name": name, "start": start.name, "architecture": start.model.architecture,
                    "parameters": sum(p.numel() for p in start.model.parameters())},
        "images": {"train": len(train_images), "held_out": len(held_out), "unreadable": cached.unreadable},
        "cache": {"folder": str(cache.folder), **cached.to_dict()},
        "training": {"steps": run.steps, "of": planned, "seconds": run.seconds, "run_dir": str(run_dir),
                     "data": task.description},
        "threshold": settings.threshold,
        "agreement": {"start": start_agreement},
    }
    if run.steps < planned:  # stopped early: resume to finish
        return DistillResult(None, run, report)

    best = read_detector_file(run_dir / "best.safetensors")
    student_detector = _as_detector(best, torch_device)
    report["agreement"]["distilled"] = measure_agreement(student_detector, held_out, cache,
                                                         settings.threshold).to_dict()
    report["speed"] = compare_speed(teacher, student_detector, held_out[:max(1, settings.speed_images)]).to_dict()
    extra = {**best.extra, "distillation": report}
    save_detector_file(DetectorCheckpoint(best.model, name, best.preprocess, source, extra), out, overwrite=overwrite)
    return DistillResult(out, run, report)


def _student_checkpoint(student: DetectorCheckpoint | str | os.PathLike | None) -> DetectorCheckpoint:
    if isinstance(student, DetectorCheckpoint):
        return student
    return read_checkpoint(DEFAULT_MODEL if student is None else student)  # a fresh copy on the CPU


def _as_detector(checkpoint: DetectorCheckpoint, device: torch.device) -> Detector:
    info = DetectorInfo(checkpoint.name, checkpoint.source or "in-memory", "in-memory", checkpoint.model.architecture)
    return Detector(checkpoint.model, info, checkpoint.preprocess,
                    device=device)


def agreement_table(report: dict) -> str:
    """The agreement report as a text table: the student before and after distillation, and the speeds."""
    agreement = report["agreement"]
    columns = [("student at start", agreement["start"])]
    if "distilled" in agreement:
        columns.append(("distilled student", agreement["distilled"]))
    rows = [("mask IoU", "mask_iou", "{:.3f}"), ("PAR Spearman", "par_spearman", "{:.3f}"),
            ("PAR mean abs difference", "par_mean_abs_diff", "{:.4f}"), ("mean PAR", "student_par", "{:.4f}")]
    first = agreement["start"]
    lines = [f"agreement with teacher {report['teacher']['name']} on {first['images']} held-out images "
             f"(threshold {report['threshold']}; teacher's mean PAR {first['teacher_par']:.4f})",
             f"{'':<26}" + "".join(f"{title:>20}" for title, _ in columns)]
    for label, key, style in rows:
        lines.append(f"{label:<26}" + "".join(f"{style.format(values[key]):>20}" for _, values in columns))
    if "speed" in report:
        speed = report["speed"]
        lines.append(f"speed ({speed['device']}, one image per call, median of {speed['images']}): teacher "
                     f"{speed['teacher_seconds']:.3f} s/image, student {speed['student_seconds']:.3f} s/image: "
                     f"{speed['speedup']:.1f}x faster")
    return "\n".join(lines)
