"""Writes the example workflows: UI format in workflows/, API format in workflows/api/, thumbnails, and
the example input with synthetic artifacts.

Each graph is written once below, in API format (what ComfyUI's "Save (API Format)" gives), with a
Note, node titles, groups and a layout in columns. The UI-format file (what ComfyUI's "Save" gives and
its Templates browser lists, by file name) is derived from it with each node's INPUT_TYPES: linked
inputs become slots, the rest widgets in declaration order, plus the frontend-only values ComfyUI's
editor stores (a seed's control_after_generate, LoadImage's upload). Node sizes are those ComfyUI
0.3.64's front end gives each node (image nodes tall enough for their previews);
tests/test_browser.py loads every example there and checks that nothing overlaps.

The thumbnails come from running the PAL-only graphs headless with the shipped model.

    python tools/make_workflows.py            # refuses to replace existing files
    python tools/make_workflows.py --overwrite
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"
INPUTS = WORKFLOWS / "input"
sys.path.insert(0, str(ROOT))

from pal_core import atomic, load_detector  # noqa: E402
from pal_core.imageio import overlay, read_image  # noqa: E402
from pal_core.refinement.inpainters import make_inpainter  # noqa: E402
from pal_core.refinement.refine import RefineOptions, refine  # noqa: E402
from pal_core.sheets import SheetStyle, fix_row  # noqa: E402
from pal_core.train.artifacts import ARTIFACT_KINDS, apply_artifact, random_region  # noqa: E402
from pal_core.workflow import installed_registry, run_workflow  # noqa: E402

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_NAMES = {"seed", "noise_seed"}  # the frontend adds a control_after_generate widget after these
ARTIFACT_IMAGE = "dog_synthetic_artifacts.jpg"
CHECKPOINT = "sd_xl_base_1.0.safetensors"

# Body size (without the 30 px title bar) of each node in ComfyUI's front end at width 320; image nodes
# are given room for their previews, which the front end fits into the node.
SIZES = {
    "LoadImage": (320, 360), "SaveImage": (320, 330), "PreviewImage": (320, 330), "MaskToImage": (240, 30),
    "PALLoadDetector": (320, 240), "PALDetectArtifacts": (320, 200), "PALAutoFixV2": (320, 420),
    "PALLoadOpenCVInpainter": (320, 82), "PALConnectedComponentCrop": (320, 242), "PALZoomInpaintV2": (320, 210),
    "PALComposite": (320, 122), "PALRankByPAR": (320, 330), "PALComfyInpainter": (320, 214),
    "CheckpointLoaderSimple": (320, 98), "CLIPTextEncode": (340, 150), "EmptyLatentImage": (320, 106),
    "KSampler": (320, 262), "VAEDecode": (200, 46),
}
TITLE = 30  # LiteGraph's node title bar
NOTE_WIDTH = 340
GAP_X, GAP_Y, GAP_GROUPS = 50, 40, 110
GROUP_PAD, GROUP_TITLE = 15, 45
GROUP_COLOURS = ["#3f789e", "#8A8", "#b06634", "#a1309b"]


# ------------------------------------------------------------------------------------ the graphs

DETECTOR = {"class_type": "PALLoadDetector", "_meta": {"title": "Artifact detector"},
            "inputs": {"model": "default", "device": "auto", "precision": "auto", "input_size": -1,
                       "download_if_missing": False, "allow_torchscript": False}}
# The node's default method, which is `pal fix`'s (frequency selective reconstruction at 128 px): the measured
# best (docs/benchmarks.md); the smooth telea / ns fills are what the shipped detector flags, so Auto Fix undid them.
OPENCV = {"class_type": "PALLoadOpenCVInpainter", "inputs": {"method": "fsr-fast@128", "radius": 0.0}}
POSITIVE_TEXT = "a golden retriever puppy running on a city sidewalk at sunset, detailed fur, sharp focus"
NEGATIVE_TEXT = "blurry, deformed, extra legs, watermark, text"


def load_image(name: str, title: str = "Your image") -> dict:
    return {"class_type": "LoadImage", "_meta": {"title": title}, "inputs": {"image": name}}


def save_image(images: list, prefix: str, title: str) -> dict:
    return {"class_type": "SaveImage", "_meta": {"title": title}, "inputs": {"images": images, "filename_prefix": prefix}}


def preview_image(images: list, title: str) -> dict:
    return {"class_type": "PreviewImage", "_meta": {"title": title}, "inputs": {"images": images}}


def auto_fix(images: list, detector: list, inpainter: list) -> dict:
    return {"class_type": "PALAutoFixV2", "inputs": {
        "images": images, "detector": detector, "inpainter": inpainter, "seed": 0, "threshold": 0.5, "zoom": 1.5,
        "target_size": 0, "feather": 0.06, "color_match": False, "redetect": True}}  # as `pal fix` does


def generation(batch_size: int) -> dict:
    """Load Checkpoint -> Positive/Negative -> Empty Latent -> KSampler -> VAE Decode, ids 1..7."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "2": {"class_type": "CLIPTextEncode", "_meta": {"title": "Positive"}, "inputs": {"text": POSITIVE_TEXT, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "_meta": {"title": "Negative"}, "inputs": {"text": NEGATIVE_TEXT, "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": batch_size}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 42, "steps": 25, "cfg": 7.0, "sampler_name": "dpmpp_2m", "scheduler": "karras",
            "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
    }


@dataclass
class Example:
    title: str
    note: str
    graph: dict
    columns: list[list[str]]  # node ids per column, top to bottom; "note" is the Note
    groups: list[tuple[str, list[str]]]
    runnable: bool  # needs nothing but the PAL pack and the example images
    thumbnail: str  # "overlay", "before_after", "rank", "fix_sheet"
    target: tuple[str, int] | None = None  # the node output the thumbnail shows


EXAMPLES: dict[str, Example] = {
    "Generate then auto-fix artifacts": Example(
        "Generate an image, find its artifacts, repaint them with the same model",
        "Generate an image, then let PAL find its artifacts (melted or smeared regions, broken edges) and repaint "
        "each one zoomed in with your own checkpoint.\n\n"
        "What to change:\n- Load Checkpoint: your model (SD 1.x, SDXL, ...).\n- Positive / Negative: your prompts; "
        "ComfyUI Model Inpainter repaints with the same ones.\n- Auto Fix: target_size 0 works at the model's own "
        "size (SD 1.x 512, SDXL 1024); redetect keeps a fix only where it lowered the artifacts.\n\n"
        "After a run, Auto Fix shows PAR (the share of artifact pixels) before and after for each image.",
        {**generation(1),
         "7": DETECTOR,
         "8": {"class_type": "PALComfyInpainter", "inputs": {
             "model": ["1", 0], "vae": ["1", 2], "positive": ["2", 0], "negative": ["3", 0], "steps": 20, "cfg": 6.0,
             "sampler_name": "dpmpp_2m", "scheduler": "karras", "denoise": 0.75}},
         "9": auto_fix(["6", 0], ["7", 0], ["8", 0]),
         "10": save_image(["9", 0], "pal/fixed", "Fixed"),
         "11": preview_image(["6", 0], "Generated (before the fix)")},
        [["note"], ["1", "2", "3", "4"], ["5", "6"], ["7", "8", "9"], ["10", "11"]],
        [("1. Generate", ["1", "2", "3", "4", "5", "6"]), ("2. Find and fix artifacts", ["7", "8", "9"]),
         ("3. Results", ["10", "11"])],
        runnable=False, thumbnail="fix_sheet"),
    "Generate seeds and keep the best by PAR": Example(
        "Generate a batch of seeds and keep the ones with the fewest artifacts",
        "Generate several seeds of one prompt in a batch, score each with PAR (the share of pixels the detector "
        "marks as artifacts; lower is better) and keep the best.\n\n"
        "What to change:\n- Empty Latent Image: batch_size = how many seeds to try.\n- Rank by PAR: top_k = how "
        "many to keep; max_par drops images above a PAR limit.\n\n"
        "After a run, Rank by PAR lists every image of the batch with its PAR, best first, and which were kept.",
        {**generation(6),
         "7": DETECTOR,
         "8": {"class_type": "PALRankByPAR", "inputs": {"detector": ["7", 0], "images": ["6", 0], "top_k": 2,
                                                        "max_par": 1.0, "threshold": 0.5}},
         "9": save_image(["8", 0], "pal/best", "Best seeds"),
         "10": preview_image(["6", 0], "The whole batch")},
        [["note"], ["1", "2", "3", "4"], ["5", "6"], ["7", "8"], ["9", "10"]],
        [("1. Generate a batch", ["1", "2", "3", "4", "5", "6"]), ("2. Rank by PAR", ["7", "8"]),
         ("3. Keep the best", ["9", "10"])],
        runnable=False, thumbnail="rank"),
    "Detect artifacts in your images": Example(
        "Find the artifacts in an image you already have",
        "Load an image and see where the detector finds artifacts: the overlay tints them magenta, and after a "
        "run Detect Artifacts shows each image's PAR (the share of artifact pixels).\n\n"
        f"The example image ({ARTIFACT_IMAGE}) is a generated picture (SDXL Turbo) with a synthetic "
        "artifact added by tools/make_workflows.py: a colour blotch on the building at the right, the kind the "
        "shipped model finds best; it also marks a few small spots on the dog. Load your own image instead; for "
        "real artifacts pick pal4vst-unified in the detector (the authors' model: switch download_if_missing on "
        "once, or run `pal download pal4vst-unified`).",
        {"1": load_image(ARTIFACT_IMAGE),
         "2": DETECTOR,
         "3": {"class_type": "PALDetectArtifacts", "inputs": {"detector": ["2", 0], "images": ["1", 0], "threshold": 0.5}},
         "4": save_image(["3", 2], "pal/overlay", "Artifacts tinted magenta"),
         "5": {"class_type": "MaskToImage", "inputs": {"mask": ["3", 0]}},
         "6": preview_image(["5", 0], "Artifact mask")},
        [["note"], ["1"], ["2", "3"], ["4"], ["5", "6"]],
        [("Detect", ["2", "3"]), ("Results", ["4"]), ("Mask", ["5", "6"])],
        runnable=True, thumbnail="overlay", target=("3", 2)),
    "Fix artifacts in your images": Example(
        "Auto-fix an image you already have, with no model but the detector",
        "Find the artifacts in an image and repaint each region zoomed in, in one node (Auto Fix).\n\n"
        "OpenCV fills a region from its surroundings: fast on any CPU, no prompt, but it smooths rather than "
        "invents detail. For real content use Load Diffusers Inpainter (a Stable Diffusion inpainting model, "
        "with its prompt) or ComfyUI Model Inpainter (your checkpoint) instead.\n\n"
        "After a run, Auto Fix shows PAR before and after and each region's verdict. With redetect on, a fix is "
        "kept only where the detector sees fewer artifacts. On the example image (a generated picture with a "
        "synthetic colour blotch on the building, see the detect example's Note) the blotch is repainted and "
        "kept (PAR 0.0087 -> 0.0001); the shipped detector also marks a few small spots, and a fill of those is "
        "kept only where it then finds fewer artifacts. On your own images the OpenCV fill is often rejected: "
        "use a diffusion inpainter there.",
        {"1": load_image(ARTIFACT_IMAGE),
         "2": DETECTOR,
         "3": OPENCV,
         "4": auto_fix(["1", 0], ["2", 0], ["3", 0]),
         "5": save_image(["4", 0], "pal/fixed", "Fixed"),
         "6": {"class_type": "MaskToImage", "inputs": {"mask": ["4", 1]}},
         "7": preview_image(["6", 0], "Artifacts found")},
        [["note"], ["1"], ["2", "3", "4"], ["5"], ["6", "7"]],
        [("Find and fix", ["2", "3", "4"]), ("Results", ["5"]), ("Mask", ["6", "7"])],
        runnable=True, thumbnail="before_after", target=("4", 0)),
    "Crop artifacts for any inpainter": Example(
        "Cut each artifact out zoomed in, repaint it with any inpainting, put it back",
        "The steps of Auto Fix as separate nodes, so you can put your own inpainting in the middle.\n\n"
        "Connected-Component Crop cuts a square around each artifact region (1.5x its size, the paper's "
        "zoom-in), resized to target_size. Repaint the crops with anything: replace the group 'Your inpainting' "
        "with, e.g., VAE Encode (for Inpainting) + KSampler + VAE Decode working on crops and crop_masks. "
        "Composite blends the repainted crops back; pixels outside the regions stay exactly as they were.\n\n"
        "Nothing here checks the fixes (Auto Fix's redetect does): every region found is repainted, also the "
        "small spots the shipped detector marks on the dog, where the OpenCV fill can blur the fur. min_area "
        "leaves out regions smaller than that many pixels.",
        {"1": load_image(ARTIFACT_IMAGE),
         "2": DETECTOR,
         "3": {"class_type": "PALDetectArtifacts", "inputs": {"detector": ["2", 0], "images": ["1", 0], "threshold": 0.5}},
         "4": {"class_type": "PALConnectedComponentCrop", "inputs": {
             "images": ["1", 0], "mask": ["3", 0], "dilation": 5, "zoom": 1.5, "min_area": 64, "max_area_ratio": 0.5,
             "target_size": 512, "multiple": "8", "merge_overlapping": True}},
         "5": OPENCV,
         "6": {"class_type": "PALZoomInpaintV2", "inputs": {"crops": ["4", 0], "crop_masks": ["4", 1],
                                                            "inpainter": ["5", 0], "seed": 0, "crop_plan": ["4", 2]}},
         "7": {"class_type": "PALComposite", "inputs": {"images": ["1", 0], "inpainted_crops": ["6", 0],
                                                        "crop_plan": ["4", 2], "feather": 0.06, "color_match": True}},
         "8": save_image(["7", 0], "pal/composited", "Fixed"),
         "9": preview_image(["4", 0], "The crops")},
        [["note"], ["1", "2"], ["3", "4"], ["5", "6", "9"], ["7", "8"]],
        [("1. Find and crop", ["3", "4"]), ("2. Your inpainting", ["5", "6", "9"]), ("3. Put back", ["7", "8"])],
        runnable=True, thumbnail="before_after", target=("7", 0)),
}


# ------------------------------------------------------------------------------------ UI format

class _ComfyOnlySpec:
    """INPUT_TYPES/RETURN_TYPES of ComfyUI classes the runner does not implement, for laying out the UI file
    (input order as in ComfyUI 0.3.64's nodes.py: widget values are stored by position)."""


def comfy_only_specs() -> dict[str, type]:
    def spec(inputs: dict, returns: tuple, names: tuple | None = None) -> type:
        return type("Spec", (_ComfyOnlySpec,), {"INPUT_TYPES": classmethod(lambda cls: {"required": inputs}),
                                                "RETURN_TYPES": returns, "RETURN_NAMES": names or returns})
    number = ("INT", {})
    return {
        "CheckpointLoaderSimple": spec({"ckpt_name": ([CHECKPOINT], {})}, ("MODEL", "CLIP", "VAE")),
        "CLIPTextEncode": spec({"text": ("STRING", {"multiline": True}), "clip": ("CLIP", {})}, ("CONDITIONING",)),
        "EmptyLatentImage": spec({"width": number, "height": number, "batch_size": number}, ("LATENT",)),
        "KSampler": spec({"model": ("MODEL", {}), "seed": number, "steps": number, "cfg": ("FLOAT", {}),
                          "sampler_name": (["dpmpp_2m"], {}), "scheduler": (["karras"], {}),
                          "positive": ("CONDITIONING", {}), "negative": ("CONDITIONING", {}),
                          "latent_image": ("LATENT", {}), "denoise": ("FLOAT", {})}, ("LATENT",)),
        "VAEDecode": spec({"samples": ("LATENT", {}), "vae": ("VAE", {})}, ("IMAGE",)),
    }


def input_kind(spec) -> str:
    kind = spec[0]
    return "COMBO" if isinstance(kind, (list, tuple)) else str(kind)


def note_height(text: str) -> int:
    lines = sum(len(textwrap.wrap(paragraph, 42)) or 1 for paragraph in text.split("\n"))
    return 30 + 17 * lines


def layout(example: Example) -> dict[str, tuple[int, int, int, int]]:
    """(x, y, width, height) of every node body, column by column; nodes of different groups stacked in one
    column are further apart, so their groups do not touch."""
    group_of = {node_id: title for title, ids in example.groups for node_id in ids}
    boxes, x = {}, 0
    for column in example.columns:
        y = GROUP_TITLE + GROUP_PAD + TITLE
        width = max(NOTE_WIDTH if n == "note" else SIZES[example.graph[n]["class_type"]][0] for n in column)
        for i, node_id in enumerate(column):
            if i:
                previous = column[i - 1]
                y += boxes[previous][3] + TITLE + (GAP_Y if group_of.get(previous) == group_of.get(node_id)
                                                   else GAP_GROUPS)
            w, h = ((NOTE_WIDTH, note_height(example.note)) if node_id == "note"
                    else SIZES[example.graph[node_id]["class_type"]])
            boxes[node_id] = (x, y, w, h)
        x += width + GAP_X
    return boxes


def group_box(boxes: dict, ids: list[str]) -> list[int]:
    x0 = min(boxes[i][0] for i in ids) - GROUP_PAD
    y0 = min(boxes[i][1] - TITLE for i in ids) - GROUP_TITLE
    x1 = max(boxes[i][0] + boxes[i][2] for i in ids) + GROUP_PAD
    y1 = max(boxes[i][1] + boxes[i][3] for i in ids) + GROUP_PAD
    return [x0, y0, x1 - x0, y1 - y0]


def to_ui(name: str, example: Example, classes: dict) -> dict:
    """The UI-format twin of an example's API graph, laid out, with its Note and groups."""
    graph, boxes = example.graph, layout(example)
    nodes, links = [], []
    outputs: dict[str, list[dict]] = {}
    for node_id, node in graph.items():
        cls = classes[node["class_type"]]
        names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
        outputs[node_id] = [{"name": n, "type": t, "links": [], "slot_index": i}
                            for i, (n, t) in enumerate(zip(names, cls.RETURN_TYPES))]
    for order, node_id in enumerate(graph):
        node = graph[node_id]
        cls = classes[node["class_type"]]
        declared = {**cls.INPUT_TYPES().get("required", {}), **cls.INPUT_TYPES().get("optional", {})}
        inputs, widgets = [], []
        for input_name, spec in declared.items():
            value = node["inputs"].get(input_name)
            kind = input_kind(spec)
            if isinstance(value, list):
                link_id = len(links) + 1
                origin, slot = str(value[0]), value[1]
                links.append([link_id, int(origin), slot, int(node_id), len(inputs), outputs[origin][slot]["type"]])
                outputs[origin][slot]["links"].append(link_id)
                entry = {"name": input_name, "type": kind, "link": link_id}
                if kind in WIDGET_TYPES:
                    entry["widget"] = {"name": input_name}
                inputs.append(entry)
            elif kind not in WIDGET_TYPES:
                inputs.append({"name": input_name, "type": kind, "link": None})
            if kind in WIDGET_TYPES:
                widgets.append(value if not isinstance(value, list) else spec[1].get("default"))
                if input_name in SEED_NAMES and kind == "INT":
                    widgets.append("fixed")
                if node["class_type"] == "LoadImage" and input_name == "image":
                    widgets.append("image")  # the upload button's widget
        x, y, w, h = boxes[node_id]
        entry = {"id": int(node_id), "type": node["class_type"], "pos": [x, y], "size": [w, h], "flags": {},
                 "order": order, "mode": 0, "inputs": inputs, "outputs": outputs[node_id],
                 "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets}
        if node.get("_meta", {}).get("title"):
            entry["title"] = node["_meta"]["title"]
        nodes.append(entry)
    note_id = max(int(i) for i in graph) + 1
    x, y, w, h = boxes["note"]
    nodes.append({"id": note_id, "type": "Note", "title": "About this example", "pos": [x, y], "size": [w, h],
                  "flags": {}, "order": len(nodes), "mode": 0, "inputs": [], "outputs": [], "properties": {},
                  "widgets_values": [example.note], "color": "#432", "bgcolor": "#653"})
    groups = [{"id": i + 1, "title": title, "bounding": group_box(boxes, ids), "color": GROUP_COLOURS[i % 4],
               "font_size": 24, "flags": {}} for i, (title, ids) in enumerate(example.groups)]
    return {"last_node_id": note_id, "last_link_id": len(links), "nodes": nodes, "links": links, "groups": groups,
            "config": {}, "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}, "pal_title": example.title},
            "version": 0.4}


def api_format(graph: dict) -> dict:
    return {node_id: {"inputs": node["inputs"], "class_type": node["class_type"],
                      **({"_meta": node["_meta"]} if "_meta" in node else {})} for node_id, node in graph.items()}


# ------------------------------------------------------------------------------------ images

# The synthetic artifact of the example image: kind, centre (y, x), share of the image. Chosen by trying
# kinds and places (colour blotch, melted warp; pavement, building, sky; two seeds) for one that the shipped
# detector finds and `pal fix`'s default OpenCV fill removes: on the building, PAR 0.0087 -> 0.0001
# (tests/test_workflows.py checks it). Artifacts on the dog were found, but their fills were rejected.
ARTIFACTS_PUT_IN = [("colour_blotch", (170, 460), 0.012)]


def make_artifact_example() -> Image.Image:
    """dog_sdxl_turbo.jpg with a synthetic colour blotch from pal_core.train.artifacts on the building at the
    right; fixed seed, so the file is reproducible."""
    image = np.asarray(Image.open(INPUTS / "dog_sdxl_turbo.jpg").convert("RGB"))
    kinds = {kind.name: kind for kind in ARTIFACT_KINDS}
    rng = np.random.default_rng(1)
    result, mask = image.copy(), np.zeros(image.shape[:2], bool)
    for name, center, area in ARTIFACTS_PUT_IN:
        region = random_region(image.shape[:2], area, rng, center) & ~mask
        edited = apply_artifact(result, region, kinds[name], rng)
        if edited is not None:
            result, region_mask = edited
            mask |= region_mask
    return Image.fromarray(result)


def to_pil(image) -> Image.Image:
    return Image.fromarray((image.clamp(0, 1) * 255).round().byte().cpu().numpy())


def before_after(before, after, detector) -> Image.Image:
    """The input with its artifacts tinted (left) beside the result (right)."""
    tinted = overlay(before.unsqueeze(0), detector.mask(before.unsqueeze(0)).float())[0]
    left, right = to_pil(tinted), to_pil(after)
    sheet = Image.new("RGB", (left.width + right.width + 8, left.height), "white")
    sheet.paste(left, (0, 0))
    sheet.paste(right, (left.width + 8, 0))
    return sheet


def rank_sheet(detector) -> Image.Image:
    """The example images side by side, best PAR first, the kept two framed in green, PAR written under each."""
    names = ["dog_sdxl_turbo.jpg", "reading_sdxl.jpg", ARTIFACT_IMAGE]
    images = [read_image(INPUTS / n) for n in names]
    scores = [float(detector.par(image.unsqueeze(0))[0]) for image in images]
    order = sorted(range(len(images)), key=lambda i: scores[i])
    tiles = []
    for rank, i in enumerate(order):
        tile = to_pil(images[i]).resize((256, 256))
        framed = Image.new("RGB", (264, 296), (40, 160, 60) if rank < 2 else (90, 90, 90))
        framed.paste(tile, (4, 4))
        ImageDraw.Draw(framed).text((10, 266), f"PAR {scores[i]:.4f}" + ("  kept" if rank < 2 else ""),
                                    fill="white")
        tiles.append(framed)
    sheet = Image.new("RGB", (sum(t.width for t in tiles) + 8 * (len(tiles) - 1), tiles[0].height), "white")
    for k, tile in enumerate(tiles):
        sheet.paste(tile, (k * (tile.width + 8), 0))
    return sheet


def fix_sheet(detector) -> Image.Image:
    """What Auto Fix does to a generated picture (SDXL Turbo's, with the synthetic artifact), drawn from the
    pictures of `pal fix --sheet`'s row, two by two so it fits a template thumbnail: the input, its artifacts
    with numbered regions, the result (kept fixes green, rejected red), and the first region before and after.
    The OpenCV fill stands in for the checkpoint's sampler, which needs your model."""
    image = read_image(INPUTS / ARTIFACT_IMAGE)
    result = refine(image.unsqueeze(0), detector, make_inpainter("opencv", device="cpu"), RefineOptions())
    report = result.report()[0]
    row = fix_row("generated, then auto-fixed", image, result.mask_before[0], result.images[0], result.attempted[0],
                  report["regions"], report["par_before"], report["par_after"])
    style = SheetStyle()
    index, before, after, before_text, after_text, _ = row.regions[0]
    region = Image.new("RGB", (style.panel, style.panel), style.background)
    half = style.panel // 2
    region.paste(before.resize((half, half)), (0, (style.panel - half) // 2))
    region.paste(after.resize((half, half)), (half, (style.panel - half) // 2))
    tiles = [*row.panels, (region, f"#{index}: {before_text} -> {after_text}")]
    cell_w, cell_h = style.panel + style.gap, style.panel + style.caption + style.gap
    sheet = Image.new("RGB", (style.gap + 2 * cell_w, style.gap + 2 * cell_h), style.background)
    draw = ImageDraw.Draw(sheet)
    for k, (picture, caption) in enumerate(tiles):
        x, y = style.gap + (k % 2) * cell_w, style.gap + (k // 2) * cell_h
        sheet.paste(picture, (x, y))
        draw.text((x, y + style.panel + 2), caption, fill=style.text)
    return sheet


def thumbnail(example: Example, detector) -> Image.Image:
    if example.thumbnail == "rank":
        return rank_sheet(detector)
    if example.thumbnail == "fix_sheet":  # a generation graph: what its Auto Fix does to a generated picture
        return fix_sheet(detector)
    node_id, slot = example.target
    with tempfile.TemporaryDirectory() as out:
        result = run_workflow(api_format(example.graph), input_dir=INPUTS, output_dir=out, engine="builtin",
                              progress=lambda line: None)
        image = result.output(node_id, slot)[0][0]
    if example.thumbnail == "overlay":
        return to_pil(image)
    return before_after(read_image(INPUTS / ARTIFACT_IMAGE), image, detector)


# ------------------------------------------------------------------------------------ files

def write(path: Path, content: bytes, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise SystemExit(f"{path} exists; pass --overwrite to replace the generated workflows")
    atomic.write_bytes(path, content)


def jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    write(INPUTS / ARTIFACT_IMAGE, jpeg(make_artifact_example(), 95), args.overwrite)
    classes = {**comfy_only_specs(), **dict(installed_registry())}
    detector = load_detector(device="cpu")
    for name in sorted(EXAMPLES):
        example = EXAMPLES[name]
        write(WORKFLOWS / "api" / f"{name}.json", (json.dumps(api_format(example.graph), indent=2) + "\n").encode(),
              args.overwrite)
        write(WORKFLOWS / f"{name}.json", (json.dumps(to_ui(name, example, classes), indent=2) + "\n").encode(),
              args.overwrite)
        image = thumbnail(example, detector)
        image.thumbnail((512, 512))
        write(WORKFLOWS / f"{name}.jpg", jpeg(image, 90), args.overwrite)
        print(f"wrote {name}: {len(example.graph)} nodes")


if __name__ == "__main__":
    main()
