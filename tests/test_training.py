"""Training, resuming, fine-tuning and evaluating through the CLI, on tiny data the tests make."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pal_core import load_detector, read_detector_file, save_detector_file, DetectorCheckpoint
from pal_core.cli import main
from pal_core.detect.preprocess import Preprocess
from pal_core.models.lite_fpn import LiteFPN, LiteFPNConfig
from pal_core.train.training import Recipe, TrainingError, segmentation_loss, train

SIZE = 64
TINY = LiteFPNConfig(channels=8)
TINY_PREPROCESS = Preprocess(input_size=SIZE)


def make_dataset(root, splits=("train", "val"), count=4, label_high=1, task="shapes"):
    """Squares on noise; label = the square (0/1, or 0/255 with label_high=255)."""
    rng = np.random.default_rng(0)
    for split in splits:
        (root / "images" / split / task).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split / task).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image = rng.integers(0, 80, (SIZE, SIZE, 3)).astype(np.uint8)
            label = np.zeros((SIZE, SIZE), np.uint8)
            if i % 2 == 0:
                y, x = rng.integers(0, SIZE - 20, 2)
                image[y:y + 20, x:x + 20] = 230
                label[y:y + 20, x:x + 20] = label_high
            Image.fromarray(image).save(root / "images" / split / task / f"{i}.png")
            Image.fromarray(label).save(root / "labels" / split / task / f"{i}.png")
    return root


def tiny_recipe(**changes):
    values = dict(steps=2, batch_size=2, crop_size=48, scale_range=(1.0, 1.0), lr=1e-3, warmup_steps=1,
                  val_every=2, save_every=1, log_every=1, workers=0)
    values.update(changes)
    return Recipe(**values)


def test_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    model = LiteFPN(TINY).train()
    images = torch.randn(2, 3, SIZE, SIZE) * 0.3
    labels = torch.zeros(2, SIZE, SIZE, dtype=torch.long)
    images[0, :, 8:32, 8:32] += 2.0  # a bright square is the artifact
    labels[0, 8:32, 8:32] = 1
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        loss = segmentation_loss(model(images), labels, dice_weight=0.5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.9


def test_train_writes_loadable_checkpoints_and_resume_matches_one_run(tmp_path):
    data = make_dataset(tmp_path / "data")
    torch.manual_seed(0)
    straight = train(LiteFPN(TINY), data, tmp_path / "straight", tiny_recipe(steps=4), "tiny", TINY_PREPROCESS,
                     progress=False)
    assert straight.steps == 4
    for name in ("last.safetensors", "best.safetensors", "trainer_state.pt", "log.jsonl", "recipe.json"):
        assert (tmp_path / "straight" / name).is_file()
    detector = load_detector(str(tmp_path / "straight" / "best.safetensors"), device="cpu")
    prob = detector.predict(torch.rand(1, 40, 50, 3))
    assert prob.shape == (1, 40, 50) and float(prob.min()) >= 0 and float(prob.max()) <= 1
    log = [json.loads(line) for line in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    assert any("validation" in record for record in log)

    # The same run in two parts: 2 steps, then resumed to 4, ends with the same weights.
    torch.manual_seed(0)
    train(LiteFPN(TINY), data, tmp_path / "parts", tiny_recipe(steps=4, save_every=2), "tiny", TINY_PREPROCESS,
          progress=False, stop_after=2)
    state = torch.load(tmp_path / "parts" / "trainer_state.pt", weights_only=True)
    assert state["step"] == 2
    resumed = train(LiteFPN(TINY), data, tmp_path / "parts", tiny_recipe(steps=4), "tiny", TINY_PREPROCESS,
                    progress=False, resume=True)
    assert resumed.steps == 4
    a = read_detector_file(tmp_path / "straight" / "last.safetensors").model.state_dict()
    b = read_detector_file(tmp_path / "parts" / "last.safetensors").model.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


def test_existing_run_is_not_overwritten(tmp_path):
    data = make_dataset(tmp_path / "data", splits=("train",))
    train(LiteFPN(TINY), data, tmp_path / "run", tiny_recipe(steps=1), "tiny", TINY_PREPROCESS, progress=False)
    with pytest.raises(TrainingError, match="--resume"):
        train(LiteFPN(TINY), data, tmp_path / "run", tiny_recipe(steps=1), "tiny", TINY_PREPROCESS, progress=False)
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(LiteFPN(TINY), data, tmp_path / "other", tiny_recipe(), "tiny", TINY_PREPROCESS, progress=False,
              resume=True)


def test_finetune_and_eval_commands_on_both_label_conventions(tmp_path, capsys):
    data = tmp_path / "data"
    make_dataset(data, splits=("train", "val"), label_high=255, task="a")
    make_dataset(data, splits=("train", "val", "test"), label_high=1, task="b")
    start = tmp_path / "start.safetensors"
    save_detector_file(DetectorCheckpoint(LiteFPN(TINY), "tiny", TINY_PREPROCESS, "test"), start)
    code = main(["finetune", "--data", str(data), "--out", str(tmp_path / "ft"), "--model", str(start),
                 "--steps", "2", "--batch-size", "2", "--crop-size", "48", "--workers", "0", "--val-every", "2",
                 "--quiet"])
    assert code == 0
    tuned = read_detector_file(tmp_path / "ft" / "best.safetensors")
    assert tuned.name == "tiny_finetuned" and tuned.preprocess.input_size == SIZE
    assert tuned.extra["recipe"]["lr"] == pytest.approx(6e-5) and tuned.extra["recipe"]["head_lr_mult"] == 10
    before = read_detector_file(start).model.state_dict()
    after = tuned.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)

    out_json = tmp_path / "eval.json"
    code = main(["eval", "--data", str(data), "--split", "val", "--model", str(tmp_path / "ft" / "best.safetensors"),
                 "--device", "cpu", "--json", str(out_json), "--quiet"])
    assert code == 0
    result = json.loads(out_json.read_text())
    assert set(result["tasks"]) == {"a", "b"}
    assert result["overall"]["images"] == 8
    assert "IoU (artifact)" in capsys.readouterr().out
    # An existing JSON is kept unless --overwrite.
    assert main(["eval", "--data", str(data), "--split", "val", "--model", str(start), "--device", "cpu",
                 "--json", str(out_json), "--quiet"]) == 2
    # A split that is not there: a clear error, not a traceback.
    assert main(["eval", "--data", str(data), "--split", "nope", "--model", str(start), "--quiet"]) == 2
    assert "images/nope" in capsys.readouterr().err
