"""`pal distill`: a student learns a teacher's behaviour on images the test makes; cache, resume, CLI."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from pal_core import DetectorCheckpoint, Preprocess, load_detector, read_detector_file, save_detector_file
from pal_core.cli import main
from pal_core.imageio import read_image
from pal_core.models.lite_fpn import LiteFPN, LiteFPNConfig
from pal_core.train.distillation import (DistillationError, DistillSettings, TeacherCache, UserImage, distill,
                                         distill_recipe, distillation_loss, file_sha256, list_user_images, spearman,
                                         split_held_out)
from pal_core.train.training import segmentation_loss

from conftest import make_tiny_model

SIZE = 64
IMAGES = 48
TINY_STUDENT = LiteFPNConfig(channels=8, out_indices=(1, 2))


def make_scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A smooth colour gradient with 0-3 squares of noise (the 'artifacts'); image and 0/1 label."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    c0, c1 = rng.uniform(40, 200, 3), rng.uniform(40, 200, 3)
    image = c0 + (c1 - c0) * ((yy + xx) / 2)[..., None]
    label = np.zeros((SIZE, SIZE), np.uint8)
    for _ in range(int(rng.integers(0, 4))):
        y, x = rng.integers(0, SIZE - 16, 2)
        side = int(rng.integers(10, 26))
        patch = image[y:y + side, x:x + side]
        patch += rng.normal(0, 60, patch.shape)
        label[y:y + side, x:x + side] = 1
    return np.clip(image, 0, 255).astype(np.uint8), label


def train_teacher(images: list[np.ndarray], labels: list[np.ndarray]) -> torch.nn.Module:
    """A tiny random Swin + UPerNet trained for a few steps to find the noise squares: a teacher with a
    behaviour of its own (imperfect, as real detectors are) that a student can learn."""
    model = make_tiny_model(seed=0).train()
    preprocess = Preprocess(input_size=SIZE)
    x = torch.cat([preprocess(torch.from_numpy(i).float().div(255).unsqueeze(0)) for i in images])
    y = torch.from_numpy(np.stack(labels)).long()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):
        batch = torch.randint(0, len(images), (4,), generator=generator)
        loss = segmentation_loss(model(x[batch]), y[batch], dice_weight=0.5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    images, labels = [], []
    for i in range(IMAGES):
        image, label = make_scene(rng)
        Image.fromarray(image).save(root / "images" / f"{i:02d}.png")
        images.append(image)
        labels.append(label)
    teacher = root / "teacher.safetensors"
    save_detector_file(DetectorCheckpoint(train_teacher(images, labels), "tiny_teacher", Preprocess(input_size=SIZE),
                                          "trained by the test"), teacher)
    return root


def tiny_student(seed: int = 0) -> DetectorCheckpoint:
    torch.manual_seed(seed)
    return DetectorCheckpoint(LiteFPN(TINY_STUDENT), "tiny_student", Preprocess(input_size=SIZE), "random")


def tiny_recipe(**changes):
    values = dict(steps=60, batch_size=4, crop_size=48, lr=1e-3, warmup_steps=2, dice_weight=0.0, val_every=30,
                  save_every=10, log_every=10, workers=0, freeze_batchnorm=False)  # a random student
    values.update(changes)
    return distill_recipe(**values)


SETTINGS = DistillSettings(held_out_share=0.3, map_size=SIZE, speed_images=2)


def teacher_detector(scene):
    return load_detector(str(scene / "teacher.safetensors"), device="cpu", input_size=SIZE)


def test_student_learns_the_teacher_and_a_stopped_run_resumes(scene, tmp_path):
    teacher = teacher_detector(scene)
    out = tmp_path / "student.safetensors"
    kwargs = dict(student=tiny_student(), recipe=tiny_recipe(), settings=SETTINGS, cache_dir=scene / "cache",
                  device="cpu", progress=False)
    stopped = distill(teacher, [scene / "images"], out, stop_after=30, **kwargs)
    assert stopped.out is None and not out.exists() and stopped.run.steps == 30
    assert stopped.report["cache"]["computed"] == IMAGES and stopped.report["cache"]["reused"] == 0
    state = torch.load(tmp_path / "student.run" / "trainer_state.pt", weights_only=True)
    assert state["step"] == 30

    result = distill(teacher, [scene / "images"], out, resume=True, **kwargs)
    assert result.out == out and result.run.steps == 60
    assert result.run.history[0]["step"] == 40  # continued after step 30, not from the start
    report = result.report
    start, distilled = report["agreement"]["start"], report["agreement"]["distilled"]
    assert report["images"] == {"train": IMAGES - distilled["images"], "held_out": distilled["images"], "unreadable": []}
    assert distilled["images"] >= 10
    # The untrained student's numbers are what chance gives; the distilled one must clearly beat them.
    assert distilled["mask_iou"] > 0.3 and distilled["mask_iou"] > start["mask_iou"] + 0.15, (start, distilled)
    start_rho = 0.0 if math.isnan(start["par_spearman"]) else start["par_spearman"]
    assert distilled["par_spearman"] > 0.4 and distilled["par_spearman"] > start_rho + 0.2, (start, distilled)
    assert distilled["par_mean_abs_diff"] < start["par_mean_abs_diff"]
    assert report["cache"]["reused"] == IMAGES and report["cache"]["computed"] == 0
    speed = report["speed"]
    assert speed["images"] == 2 and speed["teacher_seconds"] > 0 and speed["student_seconds"] > 0

    # The student file records its teacher and agreement, and loads like any model.
    saved = read_detector_file(out)
    recorded = saved.extra["distillation"]
    assert recorded["teacher"]["file_sha256"] == file_sha256(scene / "teacher.safetensors")
    assert recorded["agreement"]["distilled"] == distilled
    assert saved.name == "student" and saved.preprocess.input_size == SIZE
    prob = load_detector(str(out), device="cpu").predict(torch.rand(1, 50, 70, 3))
    assert prob.shape == (1, 50, 70)
    # An existing student is not replaced.
    with pytest.raises(FileExistsError):
        distill(teacher, [scene / "images"], out, **kwargs)


def test_a_second_student_reuses_the_cache_without_running_the_teacher(scene, tmp_path):
    teacher = teacher_detector(scene)
    cache = TeacherCache(scene / "second-cache", teacher, SIZE)
    first = cache.fill(list_user_images([scene / "images"]), progress=False)
    assert first.computed == IMAGES and 0 < first.bytes_per_image < SIZE * SIZE
    assert json.loads((cache.folder / "teacher.json").read_text())["input_size"] == SIZE

    calls = []
    hook = teacher.model.register_forward_hook(lambda *args: calls.append(1))
    try:
        result = distill(teacher, [scene / "images"], tmp_path / "second.safetensors", student=tiny_student(1),
                         recipe=tiny_recipe(steps=4), settings=SETTINGS, cache_dir=scene / "second-cache",
                         device="cpu", progress=False, stop_after=2)
    finally:
        hook.remove()
    assert calls == []
    assert result.report["cache"]["reused"] == IMAGES and result.report["cache"]["computed"] == 0

    # Images are keyed by content: a renamed copy hits; another teacher setting is another folder.
    copy = tmp_path / "renamed.png"
    shutil.copy(scene / "images" / "00.png", copy)
    assert cache.path(list_user_images([copy])[0]) == cache.path(list_user_images([scene / "images" / "00.png"])[0])
    assert TeacherCache(scene / "second-cache", teacher.with_input_size(32), SIZE).key != cache.key
    assert TeacherCache(scene / "second-cache", teacher, 32).key != cache.key


def test_cached_map_is_the_teachers_probability(scene, tmp_path):
    teacher = teacher_detector(scene)
    cache = TeacherCache(tmp_path / "cache", teacher, SIZE)
    images = list_user_images([scene / "images" / "03.png"])
    cache.fill(images, progress=False)
    expected = teacher.predict(read_image(scene / "images" / "03.png").unsqueeze(0))[0].numpy()
    np.testing.assert_allclose(cache.read(images[0]) / 255.0, expected, atol=0.5 / 255 + 1e-6)


def test_unreadable_images_are_skipped_and_reported(scene, tmp_path):
    folder = tmp_path / "images"
    shutil.copytree(scene / "images", folder)
    (folder / "broken.png").write_bytes(b"not an image at all")
    result = distill(teacher_detector(scene), [folder], tmp_path / "s.safetensors", student=tiny_student(),
                     recipe=tiny_recipe(steps=2), settings=SETTINGS, cache_dir=scene / "cache", device="cpu",
                     progress=False, stop_after=1)
    unreadable = result.report["images"]["unreadable"]
    assert len(unreadable) == 1 and unreadable[0][0].endswith("broken.png")
    assert result.report["images"]["train"] + result.report["images"]["held_out"] == IMAGES


def test_bad_requests_fail_before_any_work(scene, tmp_path):
    teacher = teacher_detector(scene)
    with pytest.raises(DistillationError, match="at least 4"):
        distill(teacher, [scene / "images" / "00.png", scene / "images" / "01.png"], tmp_path / "s.safetensors",
                student=tiny_student(), cache_dir=tmp_path / "c", device="cpu", progress=False)
    with pytest.raises(DistillationError, match="no such file"):
        distill(teacher, [tmp_path / "nowhere"], tmp_path / "s.safetensors", student=tiny_student(),
                cache_dir=tmp_path / "c", device="cpu", progress=False)
    with pytest.raises(DistillationError, match=".safetensors"):
        distill(teacher, [scene / "images"], tmp_path / "s.pth", cache_dir=tmp_path / "c", device="cpu")
    assert not (tmp_path / "c").exists()
    with pytest.raises(DistillationError, match="threshold.*held-out share"):
        DistillSettings(threshold=1.5, held_out_share=0)


def test_held_out_split_is_fixed_by_content():
    images = [UserImage(None, f"{i:064x}"[::-1]) for i in range(40)]
    train, held = split_held_out(images, 0.25)
    assert len(train) + len(held) == 40 and 2 <= len(held) <= 38
    assert {i.key for i in held} == {i.key for i in split_held_out(list(reversed(images)), 0.25)[1]}
    more = images + [UserImage(None, "f" * 64)]  # an added image never moves another to the other side
    assert {i.key for i in held} <= {i.key for i in split_held_out(more, 0.25)[1]}


def test_a_fresh_student_learns_faster_and_learns_its_batchnorm_statistics():
    trained, fresh = distill_recipe(), distill_recipe(fresh_student=True)
    assert (trained.lr, trained.freeze_batchnorm) == (1e-4, True)
    assert (fresh.lr, fresh.freeze_batchnorm) == (2e-4, False)
    assert distill_recipe(fresh_student=True, lr=5e-5).lr == 5e-5  # what the user gives wins


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # Ties share their mean rank: ranks (1.5, 1.5, 3, 4) against (1, 2, 3, 4).
    assert spearman([0, 0, 5, 9], [1, 2, 3, 4]) == pytest.approx(np.corrcoef([1.5, 1.5, 3, 4], [1, 2, 3, 4])[0, 1])
    assert math.isnan(spearman([0, 0, 0], [1, 2, 3]))


def test_distillation_loss_ignores_nan_and_matches_binary_cross_entropy():
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    targets = torch.rand(1, 4, 4)
    targets[0, 0] = float("nan")
    loss = distillation_loss(logits, targets, tiny_recipe(dice_weight=0.0))
    score = logits[:, 1] - logits[:, 0]
    expected = torch.nn.functional.binary_cross_entropy_with_logits(score[:, 1:], targets[:, 1:])
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert torch.all(logits.grad[0, :, 0] == 0) and torch.any(logits.grad[0, :, 1:] != 0)


def test_cli_distills_and_the_student_works_in_detect_and_rank(scene, tmp_path, capsys):
    out = tmp_path / "cli_student.safetensors"
    start = save_detector_file(tiny_student(), tmp_path / "start.safetensors")
    args = ["distill", "--teacher", str(scene / "teacher.safetensors"), "--images", str(scene / "images"),
            "--out", str(out), "--student", str(start), "--teacher-input-size", str(SIZE), "--cache",
            str(scene / "cache"), "--held-out", "0.3", "--map-size", str(SIZE), "--steps", "2", "--batch-size", "2",
            "--crop-size", "48", "--workers", "0", "--val-every", "2", "--speed-images", "1", "--device", "cpu",
            "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "mask IoU" in printed and "PAR Spearman" in printed and "faster" in printed
    report = json.loads((tmp_path / "cli_student.agreement.json").read_text())
    assert report["teacher"]["name"] == "tiny_teacher" and "distilled" in report["agreement"]
    recipe = json.loads((tmp_path / "cli_student.run" / "recipe.json").read_text())
    assert recipe["lr"] == 1e-4 and recipe["freeze_batchnorm"]  # a student that starts trained
    # Run again: refused, nothing replaced.
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err

    tiny = ["--model", str(out), "--device", "cpu", "--input-size", str(SIZE)]
    assert main(["detect", str(scene / "images" / "00.png"), *tiny]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["model"] == "cli_student"
    assert main(["rank", str(scene / "images"), *tiny, "--out", str(tmp_path / "scores.jsonl"), "--no-progress"]) == 0
    assert len((tmp_path / "scores.jsonl").read_text().splitlines()) == IMAGES
