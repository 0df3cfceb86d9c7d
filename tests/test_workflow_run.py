"""Executing workflows: list semantics, run-once results, node contracts, and the core file nodes."""

from __future__ import annotations

import json
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pal_core.cli import main
from pal_core.workflow import (NodeExecutionError, OverrideError, WorkflowValidationError, build_registry,
                               installed_registry, plugins, run_workflow)
from workflow_nodes import CALLS, TEST_NODES

REGISTRY = build_registry(TEST_NODES)


def node(kind, **inputs):
    return {"class_type": kind, "inputs": inputs}


def run(workflow, tmp_path, **kwargs):
    kwargs.setdefault("output_dir", tmp_path / "out")
    kwargs.setdefault("input_dir", tmp_path / "in")
    return run_workflow(workflow, registry=REGISTRY, **kwargs)


@pytest.fixture(autouse=True)
def fresh_counts():
    CALLS.clear()


# ----------------------------------------------------------------------------------------- lists

def test_a_list_calls_a_plain_node_once_per_item(tmp_path):
    result = run({"1": node("IntList", count=3, start=10), "2": node("AddInt", a=["1", 0], b=5),
                  "3": node("Collect", values=["2", 0])}, tmp_path)
    assert result.output("1") == [10, 11, 12]
    assert result.output("2") == [15, 16, 17] and CALLS["AddInt"] == 3
    assert result.ui("3") == {"values": [15, 16, 17], "label": ["x"]} and CALLS["Collect"] == 1
    assert result.output("3") == [48]
    assert result.nodes["2"].calls == 3


def test_shorter_lists_repeat_their_last_item(tmp_path):
    result = run({"1": node("IntList", count=4, start=0), "2": node("IntList", count=2, start=100),
                  "3": node("AddInt", a=["1", 0], b=["2", 0]), "4": node("Collect", values=["3", 0])}, tmp_path)
    assert result.output("3") == [100, 102, 103, 104]  # b: 100, 101, 101, 101


def test_output_lists_of_each_call_are_concatenated(tmp_path):
    # IntList called once per item of its `count` list (2 then 3): OUTPUT_IS_LIST outputs are joined.
    result = run({"1": node("IntList", count=2, start=0), "2": node("AddInt", a=["1", 0], b=2),
                  "3": node("IntList", count=["2", 0], start=7), "4": node("Collect", values=["3", 0])}, tmp_path)
    assert result.output("3") == [7, 8, 7, 8, 9] and CALLS["IntList"] == 3


def test_each_node_runs_once_and_only_if_an_output_needs_it(tmp_path):
    result = run({"1": node("ImageSource"), "2": node("PreviewImage", images=["1", 0]),
                  "3": node("ImageInvert", image=["1", 0]), "4": node("PreviewImage", images=["3", 0]),
                  "5": node("AddInt", a=["6", 0], b=1), "6": node("IntList", count=2, start=0)}, tmp_path)
    assert CALLS["ImageSource"] == 1 and "IntList" not in CALLS and "AddInt" not in CALLS
    assert result.order.index("1") < result.order.index("3") < result.order.index("4")
    assert set(result.nodes) == {"1", "2", "3", "4"}
    torch.testing.assert_close(result.output("3")[0], 1 - result.output("1")[0])
    assert result.ui("2") == {"images": [], "previews_not_saved": [2]}


def test_summary_lists_files_and_node_times(tmp_path):
    result = run({"1": node("ImageSource"), "2": node("SaveImage", images=["1", 0], filename_prefix="s")}, tmp_path)
    summary = result.summary()
    assert summary["status"] == "ok" and [n["id"] for n in summary["nodes"]] == ["1", "2"]
    assert all(n["seconds"] >= 0 for n in summary["nodes"])
    assert summary["files"] == [str(tmp_path / "out" / "s_00001_.png"), str(tmp_path / "out" / "s_00002_.png")]
    json.dumps(summary)


# -------------------------------------------------------------------------------------- contracts

def test_node_errors_name_the_node_and_keep_earlier_results(tmp_path):
    with pytest.raises(NodeExecutionError) as caught:
        run({"1": node("ImageSource"), "2": node("SaveImage", images=["1", 0], filename_prefix="kept"),
             "3": node("WrongArity"), "4": node("Sink", value=["3", 0])}, tmp_path)
    error = caught.value
    assert (error.node_id, error.class_type) == ("3", "WrongArity")
    assert "returned 1 value(s) but declares 2 output(s)" in str(error)
    assert [p.name for p in error.partial.files] == ["kept_00001_.png", "kept_00002_.png"]


def test_node_expansion_is_refused(tmp_path):
    with pytest.raises(NodeExecutionError, match="graph to expand"):
        run({"1": node("Expander"), "2": node("Sink", value=["1", 0])}, tmp_path)


# ------------------------------------------------------------------------------------------- save

def test_save_image_counts_on_and_never_overwrites(tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "img_00004_.png").write_bytes(b"precious")
    (out / "sub" / "img_00005_.png.txt").write_bytes(b"unrelated")  # matched like ComfyUI: counter 5 taken
    (out / "sub" / "other_00099_.png").write_bytes(b"other prefix")
    workflow = {"1": node("ImageSource"), "2": node("SaveImage", images=["1", 0], filename_prefix="sub/img")}
    first = run(workflow, tmp_path)
    assert [p.name for p in first.files] == ["img_00006_.png", "img_00007_.png"]
    second = run(workflow, tmp_path)
    assert [p.name for p in second.files] == ["img_00008_.png", "img_00009_.png"]
    assert (out / "sub" / "img_00004_.png").read_bytes() == b"precious"
    assert second.ui("2")["images"][0] == {"filename": "img_00008_.png", "subfolder": "sub", "type": "output"}


def test_saved_pixels_and_metadata_follow_comfyui(tmp_path):
    image = torch.tensor([[[[0.0, 0.5, 1.0], [0.999, 0.2, 1.3]]]])  # 255*x truncated, clipped

    class Source:
        RETURN_TYPES = ("IMAGE",)
        FUNCTION = "run"
        INPUT_TYPES = classmethod(lambda cls: {"required": {}})

        def run(self):
            return (image,)

    workflow = {"1": node("Source"), "2": node("SaveImage", images=["1", 0], filename_prefix="px_%batch_num%")}
    result = run_workflow(workflow, output_dir=tmp_path, extra_nodes={"Source": Source},
                          registry=REGISTRY)
    (path,) = result.files
    assert path.name == "px_0_00001_.png"
    with Image.open(path) as saved:
        assert np.asarray(saved).tolist() == [[[0, 127, 255], [254, 51, 255]]]
        assert json.loads(saved.text["prompt"])["2"]["class_type"] == "SaveImage"


@pytest.mark.parametrize("prefix", ["../x", "/tmp/elsewhere/x", "a/../../x", "sub/.."])
def test_prefixes_that_leave_the_output_folder_are_refused(tmp_path, prefix):
    with pytest.raises(WorkflowValidationError, match="outside the output folder"):
        run({"1": node("ImageSource"), "2": node("SaveImage", images=["1", 0], filename_prefix=prefix)}, tmp_path)
    assert not (tmp_path / "x_00001_.png").exists() and not (tmp_path / "out").exists()


def test_escaping_prefix_from_a_link_is_refused_when_it_runs(tmp_path):
    with pytest.raises(NodeExecutionError, match="outside the output folder"):
        run({"1": node("ImageSource"), "3": node("PrimitiveString", value="../../evil"),
             "2": node("SaveImage", images=["1", 0], filename_prefix=["3", 0])}, tmp_path)
    assert not list(tmp_path.rglob("*.png"))


def test_preview_images_are_written_only_with_a_preview_folder(tmp_path):
    result = run({"1": node("ImageSource"), "2": node("PreviewImage", images=["1", 0])}, tmp_path,
                 preview_dir=tmp_path / "previews")
    assert len(result.files) == 2 and all(p.parent == tmp_path / "previews" for p in result.files)
    assert result.ui("2")["images"][0]["type"] == "temp"


# ------------------------------------------------------------------------------------------- load

def test_load_image_mask_is_one_minus_alpha(tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    rgba = np.zeros((5, 7, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    rgba[1:3, 2:5, 3] = 0
    rgba[4, 6, 3] = 51
    Image.fromarray(rgba).save(folder / "sub" / "cut.png")
    Image.fromarray(np.full((6, 9, 3), 30, dtype=np.uint8)).save(folder / "plain.jpg")
    result = run({"1": node("LoadImage", image="sub/cut.png"), "2": node("PreviewImage", images=["1", 0]),
                  "3": node("MaskToImage", mask=["1", 1]), "4": node("PreviewImage", images=["3", 0]),
                  "5": node("LoadImage", image="plain.jpg"), "6": node("MaskToImage", mask=["5", 1]),
                  "7": node("PreviewImage", images=["6", 0])}, tmp_path)
    image, mask = result.output("1", 0)[0], result.output("1", 1)[0]
    assert image.shape == (1, 5, 7, 3) and mask.shape == (1, 5, 7)
    assert torch.allclose(image[..., 0], torch.full((1, 5, 7), 200 / 255))
    expected = torch.zeros(5, 7)
    expected[1:3, 2:5] = 1.0
    expected[4, 6] = 1 - 51 / 255
    torch.testing.assert_close(mask[0], expected)
    plain_mask = result.output("5", 1)[0]
    assert plain_mask.shape == (1, 64, 64) and plain_mask.abs().sum() == 0  # ComfyUI's placeholder
    assert result.output("6", 0)[0].shape == (1, 64, 64, 3)


def test_load_image_refuses_paths_outside_the_input_folder(tmp_path):
    (tmp_path / "secret.png").parent.mkdir(exist_ok=True)
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(tmp_path / "secret.png")
    (tmp_path / "in").mkdir()
    with pytest.raises(WorkflowValidationError, match="Invalid image file: ../secret.png"):
        run({"1": node("LoadImage", image="../secret.png"), "2": node("PreviewImage", images=["1", 0])}, tmp_path)


def test_animated_image_loads_one_image_per_frame(tmp_path):
    (tmp_path / "in").mkdir()
    frames = [Image.fromarray(np.full((4, 6, 3), v, dtype=np.uint8)) for v in (0, 128, 255)]
    frames[0].save(tmp_path / "in" / "anim.png", save_all=True, append_images=frames[1:])
    result = run({"1": node("LoadImage", image="anim.png"), "2": node("PreviewImage", images=["1", 0])}, tmp_path)
    image = result.output("1", 0)[0]
    assert image.shape == (3, 4, 6, 3) and image[:, 0, 0, 0].tolist() == pytest.approx([0.0, 128 / 255, 1.0])
    assert result.output("1", 1)[0].shape == (3, 64, 64)


def test_folder_loader_batches_images_in_name_order(tmp_path):
    folder = tmp_path / "in" / "set"
    folder.mkdir(parents=True)
    Image.fromarray(np.full((4, 6, 3), 10, dtype=np.uint8)).save(folder / "b.png")
    Image.fromarray(np.full((4, 6, 3), 20, dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(np.full((8, 12, 3), 30, dtype=np.uint8)).save(folder / "c.png")
    (folder / "notes.txt").write_text("not an image")
    workflow = {"1": node("LoadImageSetFromFolderNode", folder="set", resize_method="Stretch"),
                "2": node("PreviewImage", images=["1", 0])}
    batch = run(workflow, tmp_path).output("1")[0]
    assert batch.shape == (3, 4, 6, 3)
    assert (batch[:, 0, 0, 0] * 255).round().tolist() == [20, 10, 30]
    workflow["1"]["inputs"]["resize_method"] = "None"
    with pytest.raises(NodeExecutionError, match="c.png is 12x8 but the first image is 6x4"):
        run(workflow, tmp_path)
    workflow["1"]["inputs"]["folder"] = "elsewhere"
    with pytest.raises(WorkflowValidationError, match="'elsewhere' is not one of: 'set'"):
        run(workflow, tmp_path)


# ---------------------------------------------------------------------------------------- images

def test_image_scale_batch_and_masks(tmp_path):
    result = run({"1": node("ImageSource"),
                  "2": node("ImageScale", image=["1", 0], upscale_method="nearest-exact", width=4, height=0,
                            crop="disabled"),
                  "3": node("ImageBatch", image1=["2", 0], image2=["1", 0]),
                  "4": node("ImageToMask", image=["3", 0], channel="green"),
                  "5": node("InvertMask", mask=["4", 0]),
                  "6": node("MaskToImage", mask=["5", 0]), "7": node("PreviewImage", images=["6", 0]),
                  "8": node("ImageScaleBy", image=["1", 0], upscale_method="lanczos", scale_by=0.5),
                  "9": node("PreviewImage", images=["8", 0])}, tmp_path)
    source = result.output("1")[0]
    scaled = result.output("2")[0]
    assert scaled.shape == (2, 3, 4, 3)  # height 0: aspect kept, 6 * 4 / 8 = 3
    torch.testing.assert_close(scaled, source[:, 1::2, 1::2, :])  # nearest-exact: pixel centres
    batch = result.output("3")[0]
    assert batch.shape == (4, 3, 4, 3)
    torch.testing.assert_close(result.output("5")[0], 1 - batch[..., 1])
    assert result.output("6")[0].shape == (4, 3, 4, 3)
    assert result.output("8")[0].shape == (2, 3, 4, 3)


# ----------------------------------------------------------------------------------- overrides/CLI

def test_overrides_are_applied_then_validated(tmp_path):
    workflow = {"1": node("IntList", count=2, start=0), "2": node("Collect", values=["1", 0])}
    assert run(workflow, tmp_path, overrides={"1.count": 4}).output("2") == [6]
    assert run(workflow, tmp_path, overrides=["1.start=10", "2.label=run"]).ui("2") == {"values": [10, 11],
                                                                                         "label": ["run"]}
    with pytest.raises(WorkflowValidationError, match="bigger than the maximum 10"):
        run(workflow, tmp_path, overrides=["1.count=50"])
    with pytest.raises(OverrideError) as caught:
        run(workflow, tmp_path, overrides=["7.count=1", "1.colour=red"])
    assert "no node 7 (its nodes: 1, 2)" in str(caught.value)
    assert "has no input 'colour' (its inputs: count, start)" in str(caught.value)


def test_cli_runs_a_workflow_with_set_and_json(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(plugins, "load_node_packs", lambda: (TEST_NODES, []))
    path = tmp_path / "wf.json"
    path.write_text(json.dumps({"1": node("ImageSource"), "2": node("SaveImage", images=["1", 0],
                                                                     filename_prefix="cli")}))
    code = main(["run", str(path), "--output-dir", str(tmp_path / "o"), "--set", "2.filename_prefix=set/it",
                 "--json"])
    captured = capsys.readouterr()
    assert code == 0
    summary = json.loads(captured.out)
    assert [p.split("/")[-2:] for p in summary["files"]] == [["set", "it_00001_.png"], ["set", "it_00002_.png"]]
    assert "[2/2] node 2 SaveImage" in captured.err

    code = main(["run", str(path), "--output-dir", str(tmp_path / "o"), "--set", "2.filename_prefix=../up",
                 "--json"])
    captured = capsys.readouterr()
    assert code == 2 and json.loads(captured.out)["status"] == "invalid"
    assert "node 2 (SaveImage)" in captured.err and "outside the output folder" in captured.err

    path.write_text(json.dumps({"1": node("WrongArity"), "2": node("Sink", value=["1", 0])}))
    assert main(["run", str(path), "--quiet"]) == 1
    assert "node 1 (WrongArity) failed" in capsys.readouterr().err


def test_cli_lists_the_nodes_it_can_run(capsys, monkeypatch):
    monkeypatch.setattr(plugins, "load_node_packs", lambda: ({"PALThing": object}, []))
    assert main(["run", "--list-nodes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("core nodes") and "LoadImage" in lines[0] and "SaveImage" in lines[0]
    assert lines[1] == "PAL nodes: PALThing"
    assert main(["run"]) == 2 and "give a workflow file" in capsys.readouterr().err


def test_default_registry_has_core_nodes_and_reports_a_broken_pack(monkeypatch):
    registry = build_registry()
    assert registry.origins["SaveImage"] == "core" and "LoadImage" in registry and "PALAutoFix" not in registry
    broken = EntryPoint("broken", "no_such_module_for_pal_tests:NODE_CLASS_MAPPINGS", plugins.NODE_PACKS)
    not_a_mapping = EntryPoint("odd", "json:dumps", plugins.NODE_PACKS)
    works = EntryPoint("test", "workflow_nodes:TEST_NODES", plugins.NODE_PACKS)
    declared = {plugins.NODE_PACKS: [broken, not_a_mapping, works]}
    monkeypatch.setattr(plugins, "entry_points", lambda group: declared.get(group, []))
    classes, problems = plugins.load_node_packs()
    assert classes == TEST_NODES
    assert len(problems) == 2 and "'broken'" in problems[0] and "ModuleNotFoundError" in problems[0]
    assert "'odd'" in problems[1] and "not a mapping" in problems[1]
    with pytest.raises(WorkflowValidationError, match="could not be loaded") as caught:
        run_workflow({"1": node("PALDetect")}, engine="builtin")
    assert "pass --comfyui DIR" in str(caught.value)


def test_the_pack_declares_its_nodes_and_the_comfyui_engine_as_entry_points():
    from importlib.metadata import entry_points

    import pal_nodes
    packs = {point.name: point for point in entry_points(group=plugins.NODE_PACKS)}
    assert packs["pal"].load() is pal_nodes.NODE_CLASS_MAPPINGS
    assert "comfyui" in plugins.engine_names()
    assert installed_registry().origins["PALAutoFix"] == "pack"


def test_save_image_skips_a_file_that_appears_after_counting(tmp_path, monkeypatch):
    from pal_core.workflow import core_nodes
    out = tmp_path / "out"
    out.mkdir()
    (out / "img_00001_.png").write_bytes(b"written by someone else meanwhile")
    monkeypatch.setattr(core_nodes, "next_counter", lambda folder, filename: 1)  # as if counted before it existed
    result = run({"1": node("ImageSource"), "2": node("SaveImage", images=["1", 0], filename_prefix="img")}, tmp_path)
    assert [p.name for p in result.files] == ["img_00002_.png", "img_00003_.png"]
    assert (out / "img_00001_.png").read_bytes() == b"written by someone else meanwhile"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


# Examples by name: the shipped ones, their earlier names, and what a name that is neither says.

def test_an_example_runs_by_its_name_or_an_earlier_one(tmp_path, monkeypatch, capsys):
    from pal_core.workflow.examples import EXAMPLE_ALIASES, find_example, shipped_examples
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    monkeypatch.chdir(tmp_path)
    assert set(EXAMPLE_ALIASES.values()) == set(shipped_examples())  # every earlier name leads somewhere
    for old, current in EXAMPLE_ALIASES.items():
        assert find_example(old) == find_example(current + ".json") == (shipped_examples()[current], current)
    assert main(["run", "pal_autofix_opencv", "--engine", "builtin", "--json", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "'pal_autofix_opencv' is now called 'Fix artifacts in your images'" in captured.err
    summary = json.loads(captured.out)
    assert summary["workflow"] == str(shipped_examples()["Fix artifacts in your images"])
    assert [Path(p).relative_to(tmp_path / "output").as_posix() for p in summary["files"]] == ["pal/fixed_00001_.png"]


@pytest.mark.parametrize("given", ["pal_autofix_opencvv", "no/such/workflow.json"])
def test_a_workflow_that_is_neither_a_file_nor_an_example_lists_the_examples(given, tmp_path, monkeypatch, capsys):
    from pal_core.workflow.examples import shipped_examples
    monkeypatch.chdir(tmp_path)
    assert main(["run", given, "--json"]) == 2
    captured = capsys.readouterr()
    assert f"no such workflow file or example: {given}" in captured.err and "--list-examples" in captured.err
    assert all(f"\n  {name}" in captured.err for name in shipped_examples()) and len(shipped_examples()) == 5
    assert json.loads(captured.out)["examples"] == list(shipped_examples())
    assert not (tmp_path / "output").exists()


def test_the_shipped_api_twins_run_as_shipped(tmp_path, monkeypatch, capsys):
    """`pal run workflows/api/X.json` with no --input-dir finds the images in workflows/input/."""
    from pal_core.workflow.examples import shipped_examples
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    monkeypatch.chdir(tmp_path)
    twin = shipped_examples()["Detect artifacts in your images"].parent / "api" / "Detect artifacts in your images.json"
    assert main(["run", str(twin), "--engine", "builtin", "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    saves = [node for node in json.loads(twin.read_text()).values() if node["class_type"] == "SaveImage"]
    assert summary["format"] == "api" and len(summary["files"]) == len(saves) >= 1
