"""Reading workflows: the UI format converted as ComfyUI's frontend converts it, and its API-format twin."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pal_core.workflow import WorkflowFormatError, WorkflowValidationError, build_registry, run_workflow
from pal_core.workflow.formats import load, read_json
from workflow_nodes import TEST_NODES

DATA = Path(__file__).parent / "data" / "workflows"
REGISTRY = build_registry(TEST_NODES)


def without_meta(prompt: dict) -> dict:
    return {node_id: {"class_type": node["class_type"], "inputs": node["inputs"]} for node_id, node in prompt.items()}


def ui_node(node_id, kind, inputs=(), outputs=(), widgets=None, mode=0):
    node = {"id": node_id, "type": kind, "mode": mode,
            "inputs": [{"name": n, "type": t, "link": link} for n, t, link in inputs],
            "outputs": [{"name": t, "type": t, "links": links} for t, links in outputs]}
    if widgets is not None:
        node["widgets_values"] = widgets
    return node


def test_ui_file_converts_to_its_api_twin():
    loaded = load(read_json(DATA / "core_pair.ui.json"), REGISTRY)
    twin = read_json(DATA / "core_pair.api.json")
    assert loaded.source_format == "ui"
    # Reroute (2), PrimitiveNode (6) and Note (10) resolved away; bypassed (4) and muted (8, 9) dropped;
    # the PrimitiveNode's 24 replaces the stale widget value 100; LoadImage's upload entry skipped.
    assert without_meta(loaded.prompt) == without_meta(twin)
    assert loaded.prompt["3"]["_meta"] == {"title": "Scale to 24 x 16"}
    assert loaded.warnings == []


def test_ui_and_api_twins_write_the_same_image(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(inputs / "in.png")
    written = {}
    for kind in ("ui", "api"):
        result = run_workflow(DATA / f"core_pair.{kind}.json", input_dir=inputs, output_dir=tmp_path / kind,
                              registry=REGISTRY)
        assert [p.relative_to(tmp_path / kind).as_posix() for p in result.files] == ["pair/out_00001_.png"]
        written[kind] = np.asarray(Image.open(result.files[0]))
        assert result.output("3", 0)[0].shape == (1, 16, 24, 3)
    assert written["ui"].shape == (16, 24, 3)
    np.testing.assert_array_equal(written["ui"], written["api"])
    # the bypassed ImageInvert really did not run: the saved image is the scaled input, not its inverse
    assert "4" not in result.nodes


def test_input_files_are_found_beside_the_workflow_file(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "wf.json").write_text((DATA / "core_pair.api.json").read_text())
    Image.fromarray(np.zeros((10, 10, 3), dtype=np.uint8)).save(folder / "in.png")
    result = run_workflow(folder / "wf.json", output_dir=tmp_path / "out", registry=REGISTRY)
    assert len(result.files) == 1


def test_seed_control_widget_is_skipped_and_dict_widgets_are_read():
    workflow = {"nodes": [ui_node(1, "Settings", outputs=[("INT", [1])], widgets=[7, "randomize", 0.25, "slow", "hi"]),
                          ui_node(2, "Sink", inputs=[("value", "INT", 1)])],
                "links": [[1, 1, 0, 2, 0, "INT"]]}
    prompt = load(workflow, REGISTRY).prompt
    assert prompt["1"]["inputs"] == {"seed": 7, "strength": 0.25, "mode": "slow", "note": "hi"}
    workflow["nodes"][0]["widgets_values"] = {"seed": 3, "strength": 1.0, "mode": "fast"}
    assert load(workflow, REGISTRY).prompt["1"]["inputs"] == {"seed": 3, "strength": 1.0, "mode": "fast"}


def test_missing_widget_values_take_defaults_with_a_warning():
    workflow = {"nodes": [ui_node(1, "Settings", widgets=[7, "fixed", 0.25, "slow"])], "links": []}
    loaded = load(workflow, REGISTRY)
    assert loaded.prompt["1"]["inputs"]["note"] == "none"
    assert len(loaded.warnings) == 1 and "'note'" in loaded.warnings[0] and "node 1 (Settings)" in loaded.warnings[0]
    workflow["nodes"][0]["widgets_values"] = [7, "fixed", 0.25, "slow", "n", "surplus"]
    assert "extra values were ignored" in load(workflow, REGISTRY).warnings[0]


def test_bypass_passes_the_input_of_the_matching_type():
    # Blend(mask, image) bypassed: its IMAGE output must come from its `image` input (slot 1), not slot 0.
    workflow = {"nodes": [ui_node(1, "ImageSource", outputs=[("IMAGE", [1])]),
                          ui_node(2, "LoadImage", outputs=[("IMAGE", []), ("MASK", [2])], widgets=["a.png", "image"]),
                          ui_node(3, "Blend", inputs=[("mask", "MASK", 2), ("image", "IMAGE", 1)],
                                  outputs=[("IMAGE", [3]), ("MASK", [4])], mode=4),
                          ui_node(4, "Sink", inputs=[("value", "IMAGE", 3)]),
                          ui_node(5, "Sink", inputs=[("value", "MASK", 4)])],
                "links": [[1, 1, 0, 3, 1, "IMAGE"], [2, 2, 1, 3, 0, "MASK"], [3, 3, 0, 4, 0, "IMAGE"],
                          [4, 3, 1, 5, 0, "MASK"]]}
    prompt = load(workflow, REGISTRY).prompt
    assert "3" not in prompt
    assert prompt["4"]["inputs"]["value"] == ["1", 0]
    assert prompt["5"]["inputs"]["value"] == ["2", 1]
    # Mixer(mask, extra: *, image): an exact IMAGE match is preferred to the earlier "*" input
    workflow["nodes"][2] = ui_node(3, "Mixer", inputs=[("mask", "MASK", 2), ("extra", "*", 5), ("image", "IMAGE", 1)],
                                   outputs=[("IMAGE", [3])], mode=4)
    workflow["nodes"].append(ui_node(6, "PrimitiveInt", outputs=[("INT", [5])], widgets=[1, "fixed"]))
    workflow["links"] = workflow["links"][:3] + [[5, 6, 0, 3, 1, "*"]]
    workflow["nodes"].pop(4)
    assert load(workflow, REGISTRY).prompt["4"]["inputs"]["value"] == ["1", 0]


def test_bypass_chain_and_reroute_chain_resolve_to_the_real_source():
    workflow = {"nodes": [ui_node(1, "ImageSource", outputs=[("IMAGE", [1])]),
                          ui_node(2, "Reroute", inputs=[("", "*", 1)], outputs=[("IMAGE", [2])]),
                          ui_node(3, "ImageInvert", inputs=[("image", "IMAGE", 2)], outputs=[("IMAGE", [3])], mode=4),
                          ui_node(4, "Reroute", inputs=[("", "*", 3)], outputs=[("IMAGE", [4])]),
                          ui_node(5, "ImageInvert", inputs=[("image", "IMAGE", 4)], outputs=[("IMAGE", [5])], mode=4),
                          ui_node(6, "SaveImage", inputs=[("images", "IMAGE", 5)], widgets=["x"])],
                "links": [[1, 1, 0, 2, 0, "*"], [2, 2, 0, 3, 0, "IMAGE"], [3, 3, 0, 4, 0, "IMAGE"],
                          [4, 4, 0, 5, 0, "IMAGE"], [5, 5, 0, 6, 0, "IMAGE"]]}
    prompt = load(workflow, REGISTRY).prompt
    assert sorted(prompt) == ["1", "6"] and prompt["6"]["inputs"]["images"] == ["1", 0]


def test_input_from_a_muted_node_is_removed_and_the_error_says_why(tmp_path):
    workflow = {"nodes": [ui_node(1, "ImageSource", outputs=[("IMAGE", [1])], mode=2),
                          ui_node(2, "SaveImage", inputs=[("images", "IMAGE", 1)], widgets=["x"])],
                "links": [[1, 1, 0, 2, 0, "IMAGE"]]}
    loaded = load(workflow, REGISTRY)
    assert loaded.prompt == {"2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}}
    with pytest.raises(WorkflowValidationError) as caught:
        run_workflow(workflow, output_dir=tmp_path, registry=REGISTRY)
    (issue,) = caught.value.issues
    assert (issue.node_id, issue.input_name, issue.kind) == ("2", "images", "required_input_missing")
    assert "node 1 (ImageSource), which is muted" in issue.message


def test_primitive_through_a_reroute_sets_the_widget():
    workflow = {"nodes": [ui_node(1, "PrimitiveNode", outputs=[("INT", [1])], widgets=[9, "fixed"]),
                          ui_node(2, "Reroute", inputs=[("", "*", 1)], outputs=[("INT", [2])]),
                          ui_node(3, "OddRejecter", inputs=[("value", "INT", 2)], outputs=[("INT", [])], widgets=[4])],
                "links": [[1, 1, 0, 2, 0, "INT"], [2, 2, 0, 3, 0, "INT"]]}
    assert load(workflow, REGISTRY).prompt["3"]["inputs"] == {"value": 9}


def test_subgraphs_and_group_nodes_are_refused_by_node():
    subgraph_id = "1b9c2f3e-0a4d-4c5e-8f60-123456789abc"
    workflow = {"nodes": [ui_node(4, subgraph_id), ui_node(5, "workflow>Upscale pair"), ui_node(6, "ImageSource")],
                "links": [], "definitions": {"subgraphs": [{"id": subgraph_id, "nodes": []}]},
                "extra": {"groupNodes": {"Upscale pair": {}}}}
    with pytest.raises(WorkflowFormatError) as caught:
        load(workflow, REGISTRY)
    text = str(caught.value)
    assert "node 4" in text and "subgraph" in text and "Unpack" in text
    assert "node 5 (workflow>Upscale pair) is a group node" in text


def test_api_format_is_checked_and_normalised():
    prompt = load({"1": {"class_type": "ImageSource", "inputs": {}},
                   2: {"class_type": "Sink", "inputs": {"value": [1, 0]}}}, REGISTRY).prompt
    assert prompt["2"]["inputs"]["value"] == ["1", 0]
    with pytest.raises(WorkflowFormatError) as caught:
        load({"1": {"inputs": {}}, "2": "SaveImage"}, REGISTRY)
    assert "node 1: has no class_type" in str(caught.value) and "node 2: expected an object" in str(caught.value)
    wrapped = {"prompt": {"1": {"class_type": "ImageSource", "inputs": {}}}, "client_id": "x"}
    assert load(wrapped, REGISTRY).source_format == "api"


def test_unreadable_files_say_what_is_wrong(tmp_path):
    with pytest.raises(WorkflowFormatError, match="no such workflow file"):
        read_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{\"1\": ")
    with pytest.raises(WorkflowFormatError, match="not valid JSON"):
        read_json(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(WorkflowFormatError, match="JSON object"):
        read_json(tmp_path / "list.json")


def test_conversion_does_not_modify_the_document():
    data = read_json(DATA / "core_pair.ui.json")
    before = copy.deepcopy(data)
    load(data, REGISTRY)
    assert data == before
    assert json.dumps(data)  # still serialisable


def test_a_saved_png_carries_its_workflow_and_runs_again(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (12, 18, 3), dtype=np.uint8)).save(inputs / "in.png")
    first = run_workflow(DATA / "core_pair.ui.json", input_dir=inputs, output_dir=tmp_path / "a", registry=REGISTRY)
    with Image.open(first.files[0]) as saved:
        assert json.loads(saved.text["workflow"]) == read_json(DATA / "core_pair.ui.json")
        assert without_meta(json.loads(saved.text["prompt"])) == without_meta(read_json(DATA / "core_pair.api.json"))
    again = run_workflow(first.files[0], input_dir=inputs, output_dir=tmp_path / "b", registry=REGISTRY)
    assert again.source_format == "ui"
    np.testing.assert_array_equal(np.asarray(Image.open(again.files[0])), np.asarray(Image.open(first.files[0])))
    Image.fromarray(np.zeros((2, 2, 3), dtype=np.uint8)).save(tmp_path / "plain.png")
    with pytest.raises(WorkflowFormatError, match="carries no ComfyUI workflow"):
        run_workflow(tmp_path / "plain.png", registry=REGISTRY)


def test_ui_workflow_with_uninstalled_nodes_names_them_all(tmp_path):
    workflow = {"nodes": [ui_node(1, "CheckpointLoaderSimple", outputs=[("MODEL", [1])], widgets=["sd.safetensors"]),
                          ui_node(2, "KSampler", inputs=[("model", "MODEL", 1)], outputs=[("LATENT", [2])],
                                  widgets=[5, "randomize", 20, 7.0, "euler", "normal", 1.0]),
                          ui_node(3, "VAEDecode", inputs=[("samples", "LATENT", 2)], outputs=[("IMAGE", [3])]),
                          ui_node(4, "SaveImage", inputs=[("images", "IMAGE", 3)], widgets=["x"])],
                "links": [[1, 1, 0, 2, 0, "MODEL"], [2, 2, 0, 3, 0, "LATENT"], [3, 3, 0, 4, 0, "IMAGE"]]}
    with pytest.raises(WorkflowValidationError) as caught:
        run_workflow(workflow, output_dir=tmp_path, registry=REGISTRY)
    assert caught.value.missing_node_types() == {"CheckpointLoaderSimple": ["1"], "KSampler": ["2"],
                                                 "VAEDecode": ["3"]}
    assert len(caught.value.issues) == 3  # the SaveImage link from an unknown node is not a second error


def test_list_valued_widgets_are_values_not_links(tmp_path):
    workflow = {"nodes": [ui_node(1, "Tags", outputs=[("STRING", [1])], widgets=[["blue", "red"]]),
                          ui_node(2, "Sink", inputs=[("value", "STRING", 1)])],
                "links": [[1, 1, 0, 2, 0, "STRING"]]}
    assert load(workflow, REGISTRY).prompt["1"]["inputs"] == {"tags": {"__value__": ["blue", "red"]}}
    result = run_workflow(workflow, output_dir=tmp_path, registry=REGISTRY)
    assert result.output("1") == ["blue,red"]
    workflow["nodes"][0]["widgets_values"] = [["blue", "pink"]]
    with pytest.raises(WorkflowValidationError, match="'pink' is not one of"):
        run_workflow(workflow, output_dir=tmp_path, registry=REGISTRY)


def test_links_of_undeclared_inputs_must_point_somewhere(tmp_path):
    with pytest.raises(WorkflowValidationError, match="input 'extra': linked to node 8, which is not in the workflow"):
        run_workflow({"1": {"class_type": "ImageSource", "inputs": {"extra": ["8", 0]}},
                      "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}},
                     output_dir=tmp_path, registry=REGISTRY)
