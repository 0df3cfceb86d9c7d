"""Synthetic artifacts: every kind changes pixels only inside its mask, and labels what it changed."""

import numpy as np
import pytest

from pal_core.train.artifacts import (ARTIFACT_KINDS, MIN_VISIBLE_CHANGE, apply_artifact, random_region,
                                      random_stroke_region, synthesize)


def textured_image(size: int = 128, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients plus texture: every kind has something to change."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([yy, xx, (yy + xx) / 2], axis=-1) * 200 + 20
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("kind", ARTIFACT_KINDS, ids=lambda k: k.name)
def test_each_kind_changes_only_inside_its_mask(kind):
    image = textured_image()
    donor = textured_image(seed=1)[::-1].copy()
    rng = np.random.default_rng(3)
    for _ in range(10):
        if kind.region == "stroke":
            region = random_stroke_region(image.shape[:2], rng)
        else:
            region = random_region(image.shape[:2], 0.05, rng)
        result = apply_artifact(image, region, kind, rng, donor)
        if result is not None:
            break
    assert result is not None, f"{kind.name} never made a visible change"
    edited, mask = result
    changed = np.abs(edited.astype(int) - image.astype(int)).max(axis=2) > 0
    assert mask.any()
    assert not changed[~mask].any(), "pixels outside the label were modified"
    assert (mask <= region).all(), "the label leaves the region it was drawn in"
    # The label is mostly pixels that did change, and the change is visible on average.
    assert changed[mask].mean() > 0.5
    assert np.abs(edited.astype(float) - image)[mask].max(axis=-1).mean() >= MIN_VISIBLE_CHANGE


def test_invisible_edit_is_rejected():
    flat = np.full((64, 64, 3), 128, np.uint8)
    region = np.zeros((64, 64), bool)
    region[20:40, 20:40] = True
    inpaint = next(k for k in ARTIFACT_KINDS if k.name == "inpaint_smear")
    # Inpainting a flat grey square from its flat grey border changes (almost) nothing: no label.
    rng = np.random.default_rng(0)
    results = [apply_artifact(flat, region, inpaint, rng) for _ in range(5)]
    assert any(r is None for r in results)


def test_region_area_follows_the_request():
    rng = np.random.default_rng(0)
    for fraction in (0.002, 0.02, 0.1):
        areas = [random_region((256, 256), fraction, rng).mean() for _ in range(20)]
        assert fraction / 3 < np.median(areas) < fraction * 3


def test_synthesize_keeps_total_area_and_reports_kinds():
    image = textured_image(160)
    rng = np.random.default_rng(5)
    for _ in range(5):
        edited, mask, kinds = synthesize(image, rng, max_regions=4, max_total=0.3)
        assert mask.mean() <= 0.3
        assert set(kinds) <= {k.name for k in ARTIFACT_KINDS}
        changed = np.abs(edited.astype(int) - image.astype(int)).max(axis=2) > 0
        assert not changed[~mask].any()
        assert bool(kinds) == bool(mask.any())


def test_detailed_points_fall_where_the_picture_has_structure():
    from pal_core.train.artifacts import detailed_point

    image = np.full((256, 256, 3), 120, np.uint8)
    image[160:240, 20:100] = np.random.default_rng(0).integers(0, 255, (80, 80, 3), dtype=np.uint8)
    rng = np.random.default_rng(1)
    points = np.array([detailed_point(image, rng) for _ in range(200)])
    inside = (points[:, 0] > 140) & (points[:, 0] < 260) & (points[:, 1] > 0) & (points[:, 1] < 120)
    assert inside.mean() > 0.9
    # A region built around such a point contains it.
    y, x = points[0]
    region = random_region((256, 256), 0.01, rng, center=(y, x))
    assert region[int(min(y, 255)), int(min(x, 255))]


def test_fused_ghost_shows_the_donor_through_at_partial_opacity():
    from pal_core.train.artifacts import fused_ghost

    image = np.full((96, 96, 3), 40, np.uint8)
    donor = np.full((96, 96, 3), 220, np.uint8)
    region = random_region((96, 96), 0.2, np.random.default_rng(0), center=(48, 48))
    for seed in range(8):
        ghosted = fused_ghost(image, region, np.random.default_rng(seed), donor=donor)[region]
        if (ghosted > 40).all():  # the donor was used (a seed may ghost the image onto itself instead)
            # Neither layer wins: every pixel is a blend, with the alpha range of the docstring.
            assert ghosted.min() >= 40 + 0.3 * 0.5 * 180 - 1 and ghosted.max() <= 40 + 0.7 * 180 + 1
            return
    pytest.fail("no seed used the donor image")


def test_scrambled_structure_keeps_the_colours_but_not_the_layout():
    from pal_core.train.artifacts import scrambled_structure

    image = textured_image(160, seed=4)
    image[60:100] = (200, 40, 40)  # a red band: structure to shred
    region = random_region((160, 160), 0.25, np.random.default_rng(2), center=(80, 80))
    shredded = scrambled_structure(image, region, np.random.default_rng(5))
    inside_before, inside_after = image[region].astype(float), shredded[region].astype(float)
    # Colours are the region's own (a shuffle, not a repaint) ...
    assert np.abs(inside_before.mean(0) - inside_after.mean(0)).max() < 20
    # ... but many pixels moved far: the band's edges are no longer where they were.
    assert (np.abs(inside_before - inside_after).max(-1) > 60).mean() > 0.05
