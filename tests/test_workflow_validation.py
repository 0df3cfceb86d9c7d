"""Validation before anything runs: each of ComfyUI's rules, every problem reported at once."""

from __future__ import annotations

import pytest

from pal_core.workflow import WorkflowValidationError, build_registry, run_workflow
from workflow_nodes import CALLS, TEST_NODES

REGISTRY = build_registry(TEST_NODES)


def issues_of(workflow: dict, tmp_path) -> list[tuple]:
    with pytest.raises(WorkflowValidationError) as caught:
        run_workflow(workflow, input_dir=tmp_path, output_dir=tmp_path / "out", registry=REGISTRY)
    assert not (tmp_path / "out").exists()  # nothing ran
    return [(i.node_id, i.class_type, i.input_name, i.kind) for i in caught.value.issues], caught.value


def node(kind, **inputs):
    return {"class_type": kind, "inputs": inputs}


def test_missing_classes_are_named_together_with_their_nodes(tmp_path):
    found, error = issues_of({"1": node("KSampler"), "2": node("VAEDecode", samples=["1", 0]),
                              "3": node("KSampler"), "4": node("SaveImage", images=["2", 0], filename_prefix="x")},
                             tmp_path)
    assert ("1", "KSampler", None, "missing_node_type") in found
    assert ("3", "KSampler", None, "missing_node_type") in found
    assert ("2", "VAEDecode", None, "missing_node_type") in found
    assert error.missing_node_types() == {"KSampler": ["1", "3"], "VAEDecode": ["2"]}
    assert "missing node types: KSampler (nodes 1, 3); VAEDecode (node 2)" in str(error)


def test_required_input_missing(tmp_path):
    found, error = issues_of({"1": node("SaveImage", filename_prefix="x")}, tmp_path)
    assert found == [("1", "SaveImage", "images", "required_input_missing")]
    assert "node 1 (SaveImage) input 'images': required input is missing" in str(error)


def test_links_to_missing_nodes_and_slots_and_bad_links(tmp_path):
    found, error = issues_of({"1": node("ImageSource"),
                              "2": node("SaveImage", images=["9", 0], filename_prefix="a"),
                              "3": node("SaveImage", images=["1", 2], filename_prefix="b"),
                              "4": node("SaveImage", images=["1", 0, 5], filename_prefix="c")}, tmp_path)
    assert found == [("2", "SaveImage", "images", "missing_linked_node"),
                     ("3", "SaveImage", "images", "missing_linked_output"),
                     ("4", "SaveImage", "images", "bad_linked_input")]
    assert "linked to node 9, which is not in the workflow" in str(error)
    assert "output slot 2 of node 1 (ImageSource), which has 1 output(s)" in str(error)


def test_type_mismatch_but_any_type_and_unions_fit(tmp_path):
    found, error = issues_of({"1": node("ImageSource"), "2": node("InvertMask", mask=["1", 0]),
                              "3": node("MaskToImage", mask=["2", 0]), "4": node("PreviewImage", images=["3", 0])},
                             tmp_path)
    assert found == [("2", "InvertMask", "mask", "return_type_mismatch")]
    assert "expects MASK but is linked to output 0 of node 1 (ImageSource), which gives IMAGE" in str(error)

    class Union:
        RETURN_TYPES = ("IMAGE,MASK",)
        FUNCTION = "run"
        INPUT_TYPES = classmethod(lambda cls: {"required": {}})

        def run(self):
            return (None,)

    registry = build_registry({**TEST_NODES, "Union": Union})
    from pal_core.workflow.validation import validate
    validate({"1": node("Union"), "2": node("InvertMask", mask=["1", 0]), "3": node("Sink", value=["2", 0])},
             registry)  # a union output fits; "*" (Sink) takes anything


def test_values_out_of_range_not_convertible_or_not_in_the_combo(tmp_path):
    found, error = issues_of({"1": node("Settings", seed=-1, strength=1.5, mode="medium"),
                              "2": node("Sink", value=["1", 0]),
                              "3": node("Settings", seed="many", strength="0.5", mode="fast"),
                              "4": node("Sink", value=["3", 1])}, tmp_path)
    assert found == [("1", "Settings", "seed", "value_smaller_than_min"),
                     ("1", "Settings", "strength", "value_bigger_than_max"),
                     ("1", "Settings", "mode", "value_not_in_list"),
                     ("3", "Settings", "seed", "invalid_input_type")]
    text = str(error)
    assert "value 1.5 is bigger than the maximum 1.0" in text
    assert "'medium' is not one of: 'fast', 'slow'" in text
    assert "'many' cannot be converted to INT" in text
    assert "4 problems" in text


def test_converted_values_reach_the_node(tmp_path):
    Sink_seen = TEST_NODES["Sink"].SEEN
    Sink_seen.clear()
    run_workflow({"1": node("Settings", seed="7", strength="0.25", mode="slow"), "2": node("Sink", value=["1", 1]),
                  "3": node("Sink", value=["1", 0])}, output_dir=tmp_path, registry=REGISTRY)
    assert Sink_seen == [0.25, 7] and isinstance(Sink_seen[1], int)


def test_cycles_are_refused(tmp_path):
    found, error = issues_of({"1": node("AddInt", a=["2", 0], b=1), "2": node("AddInt", a=["1", 0], b=1),
                              "3": node("Sink", value=["2", 0])}, tmp_path)
    assert [f[3] for f in found] == ["dependency_cycle"]
    assert "loops back on itself" in str(error) and "1 (AddInt)" in str(error) and "2 (AddInt)" in str(error)


def test_no_output_node(tmp_path):
    found, error = issues_of({"1": node("ImageSource")}, tmp_path)
    assert found == [(None, None, None, "prompt_no_outputs")]
    assert "no output node" in str(error)


def test_validate_inputs_is_called_and_its_inputs_skip_the_range_check(tmp_path):
    found, error = issues_of({"1": node("OddRejecter", value=3), "2": node("Sink", value=["1", 0])}, tmp_path)
    assert found == [("1", "OddRejecter", "value", "custom_validation_failed")]
    assert "value must be even, got 3" in str(error)
    # VALIDATE_INPUTS takes `value`, so ComfyUI leaves its min/max to the node: 12 > max 10 passes
    run_workflow({"1": node("OddRejecter", value=12), "2": node("Sink", value=["1", 0])}, output_dir=tmp_path,
                 registry=REGISTRY)


def test_every_problem_is_listed_and_nothing_runs(tmp_path):
    CALLS.clear()
    found, _ = issues_of({"1": node("ImageSource"), "2": node("SaveImage", images=["1", 0], filename_prefix="ok"),
                          "3": node("SaveImage", filename_prefix="x"), "4": node("Nope"),
                          "5": node("IntList", count=11, start=0), "6": node("Collect", values=["5", 0])}, tmp_path)
    assert {f[3] for f in found} == {"required_input_missing", "missing_node_type", "value_bigger_than_max"}
    assert CALLS == {}


def test_nodes_no_output_needs_are_not_validated(tmp_path):
    # As ComfyUI: a broken node nothing depends on is ignored (its class must still exist).
    result = run_workflow({"1": node("ImageSource"), "2": node("PreviewImage", images=["1", 0]),
                           "3": node("Settings", seed=-5, strength=9, mode="?")}, output_dir=tmp_path,
                          registry=REGISTRY)
    assert set(result.nodes) == {"1", "2"}


def test_missing_input_image_and_escaping_prefix_are_caught_before_running(tmp_path):
    found, error = issues_of({"1": node("LoadImage", image="nowhere.png"),
                              "2": node("SaveImage", images=["1", 0], filename_prefix="../outside/x")}, tmp_path)
    assert found == [("1", "LoadImage", "image", "custom_validation_failed"),
                     ("2", "SaveImage", "filename_prefix", "custom_validation_failed")]
    assert "Invalid image file: nowhere.png" in str(error) and "outside the output folder" in str(error)


def test_a_node_class_whose_input_types_fails_is_reported(tmp_path):
    class Broken:
        RETURN_TYPES = ("IMAGE",)
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls):
            raise RuntimeError("model folder not configured")

    registry = build_registry({**TEST_NODES, "Broken": Broken})
    with pytest.raises(WorkflowValidationError) as caught:
        run_workflow({"1": node("Broken"), "2": node("PreviewImage", images=["1", 0])}, output_dir=tmp_path,
                     registry=registry)
    (issue,) = caught.value.issues
    assert (issue.node_id, issue.kind) == ("1", "invalid_node_class")
    assert "INPUT_TYPES() failed: RuntimeError: model folder not configured" in issue.message
