"""The synthetic dataset writer: PAL4VST layout, 0/1 labels matching the edits, reproducible, no overwrite."""

import json

import numpy as np
import pytest
from PIL import Image

from pal_core.train.clean_sources import CleanImage
from pal_core.train.synthetic_data import SampleSpec, SyntheticConfig, generate_dataset, load_sources, make_sample


def fake_images():
    rng = np.random.default_rng(0)

    def picture(seed):
        local = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:96, 0:128] / 96
        base = np.stack([yy, xx, yy * xx], -1) * 180 + 30
        return lambda: np.clip(base + local.normal(0, 10, base.shape), 0, 255).astype(np.uint8)

    # Groups named so the split puts them on fixed sides: photo:* is train unless in HOLDOUT_GROUPS.
    return [CleanImage("photo_a", "photo:a", picture(1)), CleanImage("photo_b", "photo:b", picture(2)),
            CleanImage("photo_china", "photo:china", picture(3))]


SIZE = 128
CONFIG = SyntheticConfig(train_samples=6, val_per_kind=1, val_clean=1, clean_share=0.3, seed=1, size=SIZE)


def test_layout_labels_and_manifest(tmp_path):
    manifest = generate_dataset(fake_images(), tmp_path / "d", CONFIG, workers=1, progress=False)
    root = tmp_path / "d"
    train_images = sorted((root / "images/train/mixed").glob("*.png"))
    assert len(train_images) == 6
    assert len(list((root / "images/val").rglob("*.png"))) == len(manifest["kinds"]) + 1
    assert (root / "clean_holdout/photo_china.png").is_file()
    assert manifest["sources"]["holdout"] == ["photo_china"]
    for record in manifest["samples"]:
        label = np.asarray(Image.open(root / "labels" / record["file"]))
        image = np.asarray(Image.open(root / "images" / record["file"]))
        assert image.shape == (SIZE, SIZE, 3) and label.shape == (SIZE, SIZE)
        assert set(np.unique(label)) <= {0, 1}
        assert label.mean() == pytest.approx(record["artifact_fraction"])
        assert bool(record["kinds"]) == bool(label.any())
    clean = json.loads((root / "manifest.json").read_text())["samples"][-1]
    assert clean["file"].startswith("val/clean/") and clean["artifact_fraction"] == 0
    with pytest.raises(FileExistsError, match="--overwrite"):
        generate_dataset(fake_images(), root, CONFIG, progress=False)


def test_samples_are_reproducible_and_labels_cover_the_edits():
    sources = load_sources(fake_images())
    config = SyntheticConfig(jpeg_share=0.0, clean_share=0.0, seed=4, size=SIZE)
    spec = SampleSpec("train", "mixed", 3, None)
    image, label, kinds = make_sample(spec, config, sources)
    again, label_again, _ = make_sample(spec, config, sources)
    assert np.array_equal(image, again) and np.array_equal(label, label_again)
    assert kinds and label.any()
    # The same view without artifacts: regenerate with the same seed but clean, compare outside the label.
    clean, clean_label, clean_kinds = make_sample(SampleSpec("train", "mixed", 3, "clean"), config, sources)
    assert not clean_kinds and not clean_label.any()
    same_view = np.abs(image.astype(int) - clean.astype(int)).max(-1)
    assert (same_view[label == 0] == 0).all()


def test_missing_source_packages_name_the_pip_command(monkeypatch):
    from pal_core.train import clean_sources

    # Only the missing package: the test must not depend on which of the real ones this machine has.
    monkeypatch.setattr(clean_sources, "REQUIRED_PACKAGES", {"no-such-package-for-pal-tests": "no_such_module_for_pal",
                                                              "numpy": "numpy"})
    with pytest.raises(clean_sources.MissingSourcesError, match="`pip install no-such-package-for-pal-tests`"):
        clean_sources.ensure_packages(install=False)


def test_holdout_split_is_stable_and_keeps_groups_together():
    a = CleanImage("still_x-1", "still:x", lambda: None)
    b = CleanImage("still_x-2", "still:x", lambda: None)
    assert a.split == b.split
    assert CleanImage("photo_china", "photo:china", lambda: None).split == "holdout"
    assert CleanImage("photo_astronaut", "photo:astronaut", lambda: None).split == "train"


def test_photo_share_picks_photos_or_stills_and_falls_back():
    from pal_core.train.synthetic_data import SourcePool

    still, photo = np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 255, np.uint8)
    pool = SourcePool(stills=[still], photos=[photo])
    rng = np.random.default_rng(0)
    assert all(pool.pick(rng, 1.0) is photo for _ in range(20))
    assert all(pool.pick(rng, 0.0) is still for _ in range(20))
    picks = [pool.pick(rng, 0.35) is photo for _ in range(2000)]
    assert 0.3 < np.mean(picks) < 0.4
    # A split without photos (or without stills) still yields images.
    assert SourcePool(stills=[still], photos=[]).pick(rng, 1.0) is still
    assert SourcePool(stills=[], photos=[photo]).pick(rng, 0.0) is photo


def test_global_look_changes_the_whole_image_but_keeps_it_recognisable():
    from pal_core.train.synthetic_data import global_look

    image = fake_images()[0].load()
    for seed in range(12):
        changed = global_look(image, np.random.default_rng(seed))
        assert changed.shape == image.shape and changed.dtype == np.uint8
        difference = np.abs(changed.astype(int) - image.astype(int))
        assert difference.max() > 0  # something changed ...
        # ... but the picture is the same picture
        assert np.corrcoef(changed.ravel(), image.ravel())[0, 1] > 0.9
        # ... and not in one place: the change is spread over all four quadrants.
        quadrants = [difference[:48, :64], difference[:48, 64:], difference[48:, :64], difference[48:, 64:]]
        assert all(q.mean() > 0.05 for q in quadrants)


def test_samples_from_photos_are_labelled_like_any_other():
    sources = load_sources(fake_images())
    assert len(sources["train"].photos) == 2 and not sources["train"].stills
    config = SyntheticConfig(photo_share=1.0, clean_share=0.0, jpeg_share=0.0, seed=2, size=SIZE)
    image, label, kinds = make_sample(SampleSpec("train", "mixed", 0, None), config, sources)
    assert kinds and label.any() and image.shape == (SIZE, SIZE, 3)
