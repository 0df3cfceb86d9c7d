"""Measures the default detector's floors and draws its masks on real generated images.

    python tools/lite_report.py --data /work/data-pal/synth-v1 --out /tmp/lite-report [--model M]

Writes into --out:
  floors.json          artifact IoU / mIoU on the synthetic val split (per artifact kind), mean and
                       max PAR on the held-out clean images (DATA/clean_holdout, never trained on)
  overlays/*.png       image | magenta overlay, for the held-out generated stills and for frames of
                       generated videos / turntables (animated thumbnails of
                       comfyui-workflow-templates-media-image, never used in training)
  sheet.png            all overlays on one contact sheet, to look at
Speed is measured by benchmarks/lite_model.py.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pal_core import load_detector  # noqa: E402
from pal_core.imageio import list_images, overlay, read_image, write_png  # noqa: E402
from pal_core.train.evaluation import evaluate_detector  # noqa: E402


def video_frames(count: int) -> list[tuple[str, torch.Tensor]]:
    """Evenly spaced frames of the animated template thumbnails (generated video, 3D turntables)."""
    try:
        media = importlib.import_module("comfyui_workflow_templates_media_image")
    except ImportError:
        return []
    frames = []
    animated = []
    for path in sorted((Path(media.__file__).parent / "templates").glob("*.webp")):
        with Image.open(path) as img:
            if getattr(img, "n_frames", 1) > 1:
                animated.append(path)
    for path in animated[:count]:
        with Image.open(path) as img:
            img.seek(img.n_frames // 2)
            frame = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
        frames.append((f"frame_{path.stem}", torch.from_numpy(frame)))
    return frames


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="synthetic dataset from `pal prepare-data`")
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--frames", type=int, default=24, help="video frames to draw masks on")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--overlays-only", action="store_true", help="skip the floors, only draw masks")
    args = parser.parse_args(argv)
    out = Path(args.out)
    detector = load_detector(args.model, device="cpu")

    clean = [(p.stem, read_image(p)) for p in list_images([Path(args.data) / "clean_holdout"])]
    out.mkdir(parents=True, exist_ok=True)
    if not args.overlays_only:
        write_floors(detector, args, clean, out)
    draw_overlays(detector, args, clean, out)
    return 0


def write_floors(detector, args, clean, out: Path) -> None:
    result = evaluate_detector(detector, args.data, "val", args.threshold, progress=False)
    print(result.table())
    pars = [float(detector.par(image.unsqueeze(0), args.threshold)[0]) for _, image in clean]
    # Real photos and generated stills fail differently (texture vs. nothing), so both are reported.
    photos = [par for (name, _), par in zip(clean, pars) if name.startswith("photo_")]
    stills = [par for (name, _), par in zip(clean, pars) if not name.startswith("photo_")]
    floors = {
        "model": detector.info.source,
        "synthetic_val": result.to_dict(),
        "clean_holdout": {"images": len(pars), "mean_par": float(np.mean(pars)), "max_par": float(np.max(pars)),
                          "flagged_images": int(sum(p > 0 for p in pars)),
                          "mean_par_photos": float(np.mean(photos)) if photos else None,
                          "mean_par_generated": float(np.mean(stills)) if stills else None,
                          "per_image": {name: par for (name, _), par in zip(clean, pars)}},
    }
    (out / "floors.json").write_text(json.dumps(floors, indent=1))
    print(f"clean holdout: mean PAR {floors['clean_holdout']['mean_par']:.4f}, max {floors['clean_holdout']['max_par']:.4f}, "
          f"{floors['clean_holdout']['flagged_images']}/{len(pars)} images with any flagged pixel; "
          f"photos {np.mean(photos) if photos else float('nan'):.4f} ({len(photos)}), "
          f"generated {np.mean(stills) if stills else float('nan'):.4f} ({len(stills)})")


def draw_overlays(detector, args, clean, out: Path) -> None:
    tiles = []
    for name, image in clean + video_frames(args.frames):
        prob = detector.predict(image.unsqueeze(0))[0]
        par = float((prob > args.threshold).float().mean())
        side = torch.cat([image, overlay(image, (prob > args.threshold).float())], dim=1)
        write_png(out / "overlays" / f"{name}.png", side, overwrite=True)
        thumb = Image.fromarray((side.clamp(0, 1).numpy() * 255).astype(np.uint8)).resize((320, 160))
        tiles.append((name, par, np.asarray(thumb)))
        print(f"{name:70s} PAR {par:.4f}")
    cols = 4
    rows = [np.hstack([t[2] for t in tiles[i:i + cols]] + [np.zeros((160, 320 * (cols - len(tiles[i:i + cols])), 3),
                                                                     np.uint8)]) for i in range(0, len(tiles), cols)]
    if rows:
        write_png(out / "sheet.png", np.vstack(rows), overwrite=True)


if __name__ == "__main__":
    sys.exit(main())
