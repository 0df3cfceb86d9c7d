"""Chooses a logit offset for a two-class detector on the synthetic val split, and bakes it in.

The detector calls a pixel an artifact when softmax(l)[1] > 0.5, i.e. when l1 - l0 > 0. Shifting the
classifier's biases by -d/2 and +d/2 moves that decision to l1 - l0 > d, trading recall for fewer
false positives on clean images, without changing the architecture or the threshold users see.

    python tools/calibrate_bias.py --model RUN/best.safetensors --data DATA [--write OUT.safetensors --offset D]

Without --write it prints, for a grid of offsets, the val split's artifact IoU and clean-image PAR.
Only the val split is looked at: its images are random crops of the held-out sources, never the
whole held-out pictures in clean_holdout/ that the clean-PAR floor is measured on.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pal_core import read_detector_file, save_detector_file  # noqa: E402
from pal_core.train.evaluation import PixelCounts  # noqa: E402
from pal_core.train.segmentation_data import WholeImages, list_samples  # noqa: E402

OFFSETS = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)


def score_maps(checkpoint, data: str, split: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(l1 - l0 at label size as float16, label) for every image of the split."""
    model = checkpoint.model.eval()
    samples = list_samples(data, split)
    maps = []
    with torch.inference_mode():
        for image, label in torch.utils.data.DataLoader(WholeImages(samples, checkpoint.preprocess), batch_size=1):
            logits = F.interpolate(model(image).float(), size=label.shape[-2:], mode="bilinear", align_corners=False)
            maps.append(((logits[0, 1] - logits[0, 0]).half().numpy(), label[0].numpy()))
    return maps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--write", help="write the model with --offset baked into its classifier bias here")
    parser.add_argument("--offset", type=float, default=None)
    args = parser.parse_args(argv)
    checkpoint = read_detector_file(args.model)
    if args.write:
        if args.offset is None:
            parser.error("--write needs --offset")
        bias = checkpoint.model.classifier.bias
        with torch.no_grad():
            bias[0] += args.offset / 2
            bias[1] -= args.offset / 2
        checkpoint.extra["calibration"] = {"logit_offset": args.offset, "chosen_on": f"{args.data} split {args.split}"}
        save_detector_file(checkpoint, args.write)
        print(f"wrote {args.write} (offset {args.offset})")
        return 0
    maps = score_maps(checkpoint, args.data, args.split)
    print(f"{'offset':>7} {'IoU':>7} {'cleanPAR':>9} {'flagged clean':>14}")
    for offset in OFFSETS:
        counts = PixelCounts()
        flagged = 0
        for score, label in maps:
            pred = torch.from_numpy(score.astype(np.float32) > offset)
            counts.add(pred, torch.from_numpy(label))
            if not (label == 1).any() and pred.any():
                flagged += 1
        print(f"{offset:7.2f} {counts.artifact_iou:7.3f} {counts.clean_par:9.4f} {flagged:>8}/{counts.clean_images}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
