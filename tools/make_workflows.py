"""Writes the example workflows: UI format in workflows/, API format in workflows/api/, thumbnails.

Each graph is written once below, in API format (what ComfyUI's "Save (API Format)" gives). The
UI-format file (what ComfyUI's "Save" gives and its Templates browser lists) is derived from it with
each node's INPUT_TYPES: linked inputs become slots, the rest widgets in declaration order, plus the
frontend-only values ComfyUI's editor stores (a seed's control_after_generate, LoadImage's upload).
The thumbnails are outputs of running the API workflows headless with the shipped model.

    python tools/make_workflows.py            # refuses to replace existing files
    python tools/make_workflows.py --overwrite
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"
INPUTS = WORKFLOWS / "input"
sys.path.insert(0, str(ROOT))

from pal_core import atomic  # noqa: E402
from pal_core.workflow import installed_registry, run_workflow  # noqa: E402

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_NAMES = {"seed", "noise_seed"}  # the frontend adds a control_after_generate widget after these

DETECTOR = {"class_type": "PALLoadDetector",
            "inputs": {"model": "default", "device": "auto", "precision": "fp32", "input_size": 512,
                       "download_if_missing": False}}
OPENCV = {"class_type": "PALLoadInpainter",
          "inputs": {"inpainter": "opencv-telea", "negative_prompt": "", "steps": 30, "guidance": 7.5,
                     "strength": 0.99, "device": "auto", "precision": "fp16"}}


def load_image(name: str) -> dict:
    return {"class_type": "LoadImage", "inputs": {"image": name}}


def save_image(images: list, prefix: str) -> dict:
    return {"class_type": "SaveImage", "inputs": {"images": images, "filename_prefix": prefix}}


def auto_fix(images: list, detector: list, inpainter: list, prompt: str = "") -> dict:
    return {"class_type": "PALAutoFix", "inputs": {
        "images": images, "detector": detector, "inpainter": inpainter, "prompt": prompt, "seed": 0,
        "threshold": 0.5, "zoom": 1.5, "target_size": 512, "feather": 0.06, "color_match": True, "redetect": True}}


# name -> (title, API graph, node id and output slot of the thumbnail image, runs without external weights)
GRAPHS: dict[str, tuple[str, dict, tuple[str, int] | None, bool]] = {
    "pal_detect_overlay": ("Detect artifacts and preview them", {
        "1": load_image("dog_sdxl_turbo.jpg"),
        "2": DETECTOR,
        "3": {"class_type": "PALDetectArtifacts", "inputs": {"detector": ["2", 0], "images": ["1", 0], "threshold": 0.5}},
        "4": save_image(["3", 2], "pal/overlay"),
        "5": {"class_type": "MaskToImage", "inputs": {"mask": ["3", 0]}},
        "6": save_image(["5", 0], "pal/mask"),
        "7": {"class_type": "PALPARScore", "inputs": {"threshold": 0.5, "mask": ["3", 0]}},
    }, ("3", 2), True),
    "pal_rank_seed_batch": ("Rank a batch by PAR and keep the best", {
        "1": load_image("dog_sdxl_turbo.jpg"),
        "2": load_image("reading_sdxl.jpg"),
        "3": {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["2", 0]}},
        "4": DETECTOR,
        "5": {"class_type": "PALRankByPAR", "inputs": {"detector": ["4", 0], "images": ["3", 0], "top_k": 1,
                                                        "max_par": 1.0, "threshold": 0.5}},
        "6": save_image(["5", 0], "pal/best"),
    }, ("5", 0), True),
    "pal_autofix_opencv": ("Auto-fix artifacts with the OpenCV inpainter", {
        "1": load_image("reading_sdxl.jpg"),
        "2": DETECTOR,
        "3": OPENCV,
        "4": auto_fix(["1", 0], ["2", 0], ["3", 0]),
        "5": save_image(["4", 0], "pal/fixed"),
        "6": {"class_type": "MaskToImage", "inputs": {"mask": ["4", 1]}},
        "7": save_image(["6", 0], "pal/artifacts"),
    }, ("4", 0), True),
    "pal_autofix_checkpoint": ("Auto-fix artifacts with your own checkpoint", {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo, detailed, sharp, natural anatomy",
                                                         "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "deformed, blurry, extra fingers, artifacts",
                                                         "clip": ["1", 1]}},
        "4": {"class_type": "PALComfyInpainter", "inputs": {
            "model": ["1", 0], "vae": ["1", 2], "positive": ["2", 0], "negative": ["3", 0], "steps": 20, "cfg": 6.0,
            "sampler_name": "dpmpp_2m", "scheduler": "karras", "denoise": 0.75}},
        "5": load_image("reading_sdxl.jpg"),
        "6": DETECTOR,
        "7": auto_fix(["5", 0], ["6", 0], ["4", 0]),
        "8": save_image(["7", 0], "pal/fixed_checkpoint"),
    }, None, False),
    "pal_crop_inpaint_composite": ("Crop regions, inpaint them with anything, composite back", {
        "1": load_image("dog_sdxl_turbo.jpg"),
        "2": DETECTOR,
        "3": {"class_type": "PALDetectArtifacts", "inputs": {"detector": ["2", 0], "images": ["1", 0], "threshold": 0.5}},
        "4": {"class_type": "PALConnectedComponentCrop", "inputs": {
            "images": ["1", 0], "mask": ["3", 0], "dilation": 5, "zoom": 1.5, "min_area": 64, "max_area_ratio": 0.5,
            "target_size": 512, "multiple": "8", "merge_overlapping": True}},
        "5": {"class_type": "PALLoadInpainter", "inputs": dict(OPENCV["inputs"], inpainter="opencv-ns")},
        "6": {"class_type": "PALZoomInpaint", "inputs": {"crops": ["4", 0], "crop_masks": ["4", 1],
                                                          "inpainter": ["5", 0], "prompt": "", "seed": 0,
                                                          "crop_plan": ["4", 2]}},
        "7": {"class_type": "PALComposite", "inputs": {"images": ["1", 0], "inpainted_crops": ["6", 0],
                                                        "crop_plan": ["4", 2], "feather": 0.06, "color_match": True}},
        "8": save_image(["7", 0], "pal/composited"),
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }, ("7", 0), True),
}


class _ComfyOnlySpec:
    """INPUT_TYPES/RETURN_TYPES of ComfyUI classes the runner does not implement, for laying out the UI file."""


def comfy_only_specs() -> dict[str, type]:
    def spec(inputs: dict, returns: tuple, names: tuple) -> type:
        return type("Spec", (_ComfyOnlySpec,), {"INPUT_TYPES": classmethod(lambda cls: {"required": inputs}),
                                                "RETURN_TYPES": returns, "RETURN_NAMES": names})
    return {
        "CheckpointLoaderSimple": spec({"ckpt_name": (["sd_xl_base_1.0.safetensors"], {})},
                                       ("MODEL", "CLIP", "VAE"), ("MODEL", "CLIP", "VAE")),
        "CLIPTextEncode": spec({"text": ("STRING", {"multiline": True}), "clip": ("CLIP", {})},
                               ("CONDITIONING",), ("CONDITIONING",)),
    }


def input_kind(spec) -> str:
    kind = spec[0]
    return "COMBO" if isinstance(kind, (list, tuple)) else str(kind)


def depth_of(graph: dict) -> dict[str, int]:
    depth: dict[str, int] = {}

    def visit(node_id: str) -> int:
        if node_id not in depth:
            links = [v for v in graph[node_id]["inputs"].values() if isinstance(v, list)]
            depth[node_id] = 1 + max((visit(str(v[0])) for v in links), default=-1)
        return depth[node_id]

    for node_id in graph:
        visit(node_id)
    return depth


def to_ui(name: str, title: str, graph: dict, classes: dict) -> dict:
    """The UI-format twin of an API graph, laid out in columns by dependency depth."""
    depth = depth_of(graph)
    rows: dict[int, int] = {}
    nodes, links = [], []
    outputs: dict[str, list[dict]] = {}
    for node_id, node in graph.items():
        cls = classes[node["class_type"]]
        names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
        outputs[node_id] = [{"name": n, "type": t, "links": [], "slot_index": i}
                            for i, (n, t) in enumerate(zip(names, cls.RETURN_TYPES))]
    for order, (node_id, node) in enumerate(sorted(graph.items(), key=lambda kv: (depth[kv[0]], int(kv[0])))):
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
        column = depth[node_id]
        row = rows.get(column, 0)
        rows[column] = row + 1
        nodes.append({
            "id": int(node_id), "type": node["class_type"], "pos": [40 + 360 * column, 40 + 300 * row],
            "size": [320, 60 + 26 * (len(inputs) + len(widgets))], "flags": {}, "order": order, "mode": 0,
            "inputs": inputs, "outputs": outputs[node_id],
            "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets,
        })
    return {"last_node_id": max(int(i) for i in graph), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}, "pal_title": title},
            "version": 0.4}


def thumbnail(name: str, graph: dict, target: tuple[str, int] | None) -> Image.Image:
    """The image a node of the graph produces, run headless; else the graph's first input image."""
    if target is None:
        first = next(n["inputs"]["image"] for n in graph.values() if n["class_type"] == "LoadImage")
        return Image.open(INPUTS / first).convert("RGB")
    node_id, slot = target
    with tempfile.TemporaryDirectory() as out:
        result = run_workflow(graph, input_dir=INPUTS, output_dir=out, progress=lambda line: None)
        images = result.output(node_id, slot)[0]
        array = (images[0].clamp(0, 1) * 255).round().byte().cpu().numpy()
    return Image.fromarray(array)


def write(path: Path, content: bytes, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise SystemExit(f"{path} exists; pass --overwrite to replace the generated workflows")
    atomic.write_bytes(path, content)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    classes = {**comfy_only_specs(), **dict(installed_registry())}
    for name, (title, graph, target, runnable) in GRAPHS.items():
        write(WORKFLOWS / "api" / f"{name}.json", (json.dumps(graph, indent=2) + "\n").encode(), args.overwrite)
        ui = to_ui(name, title, graph, classes)
        write(WORKFLOWS / f"{name}.json", (json.dumps(ui, indent=2) + "\n").encode(), args.overwrite)
        image = thumbnail(name, graph, target if runnable else None)
        image.thumbnail((320, 320))
        jpeg = io.BytesIO()
        image.save(jpeg, format="JPEG", quality=88)
        write(WORKFLOWS / f"{name}.jpg", jpeg.getvalue(), args.overwrite)
        print(f"wrote {name}: {len(graph)} nodes")


if __name__ == "__main__":
    main()
