"""The pack on ComfyUI's V3 node schema (nodes/v3.py) in the real ComfyUI 0.3.64, and V1 everywhere else.

0.3.64 offers V3 (`comfy_api.latest`, `comfy_entrypoint`): the harness's server (tests/comfy_host.py)
loads the pack through it, so every host and browser test that runs a workflow there runs the V3
nodes. Here: that they are V3 nodes, that /object_info describes each exactly as its V1 class does
(same ids, inputs, widget order, outputs, list flags, tooltips, deprecation), and that /prompt still
refuses what V1 refused (a value a dropdown does not offer; our own VALIDATE_INPUTS messages).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import pal_nodes
from pal_nodes import NODE_CLASS_MAPPINGS, v3
from comfy_host import EXAMPLE_INPUTS, HOST_ENV, ROOT, HostError

EXAMPLE_IMAGES = {path.name for path in EXAMPLE_INPUTS.glob("*.jpg")}  # what the harness puts in input/
EXAMPLE_IMAGE = sorted(EXAMPLE_IMAGES)[0]
PROBE = Path(__file__).resolve().parent / "v3_adapter_probe.py"
# What ComfyUI's V3 schema adds to an output node by itself (Schema.finalize): hidden inputs the node never
# receives as arguments. Nothing else may differ.
OUTPUT_NODE_HIDDEN = {"prompt": ["PROMPT"], "extra_pnginfo": ["EXTRA_PNGINFO"]}


def schema_report(server) -> dict:
    finished = server.run({"1": {"class_type": "PALSchemaProbe", "inputs": {}}})
    return json.loads(finished.text("1")[0])


async def load_v1_or_v3(module):
    """What ComfyUI 0.3.64's nodes.load_custom_node looks for in a pack (V1 first, then V3)."""
    return hasattr(module, "NODE_CLASS_MAPPINGS") or hasattr(module, "comfy_entrypoint")


async def load_v1_only(module):
    """A ComfyUI from before V3: only NODE_CLASS_MAPPINGS."""
    return hasattr(module, "NODE_CLASS_MAPPINGS")


def host_nodes_module(loader) -> types.ModuleType:
    host = types.ModuleType("nodes")
    host.load_custom_node = loader
    return host


# ------------------------------------------------------------------------------------ without ComfyUI

def test_outside_comfyui_the_pack_offers_v1_mappings_only(monkeypatch):
    monkeypatch.delitem(sys.modules, "nodes", raising=False)
    assert v3.host_loads_v3() is False
    assert set(NODE_CLASS_MAPPINGS) == set(pal_nodes.NODE_DISPLAY_NAME_MAPPINGS)


@pytest.mark.parametrize("loader, schema, expected", [
    (load_v1_or_v3, "", False),  # no comfy_api here: V1
    (load_v1_only, "", False),   # a loader that never asks for comfy_entrypoint: V1
    (load_v1_or_v3, "v1", False),  # the user's switch
])
def test_v3_is_offered_only_where_the_host_loader_asks_for_it(monkeypatch, loader, schema, expected):
    monkeypatch.setitem(sys.modules, "nodes", host_nodes_module(loader))
    monkeypatch.setenv(v3.SCHEMA_ENV, schema)
    assert v3.host_loads_v3() is expected


def test_a_host_that_asks_for_comfy_entrypoint_and_has_comfy_api_gets_v3(monkeypatch):
    """comfy_api stood in by a module that has what the check looks for (the real one: the host tests)."""
    latest = types.ModuleType("comfy_api.latest")
    latest.ComfyExtension = type("ComfyExtension", (), {})
    latest.io = types.SimpleNamespace(**{name: object() for name in ("ComfyNode", "Schema", "NodeOutput", "Custom",
                                                                     "Hidden")})
    package = types.ModuleType("comfy_api")
    package.__path__ = []
    latest.__spec__ = __import__("importlib").machinery.ModuleSpec("comfy_api.latest", None)
    package.latest = latest
    monkeypatch.setitem(sys.modules, "comfy_api", package)
    monkeypatch.setitem(sys.modules, "comfy_api.latest", latest)
    monkeypatch.setitem(sys.modules, "nodes", host_nodes_module(load_v1_or_v3))
    monkeypatch.delenv(v3.SCHEMA_ENV, raising=False)
    assert v3.host_loads_v3() is True
    monkeypatch.setenv(v3.SCHEMA_ENV, "V1")  # the switch, in any case
    assert v3.host_loads_v3() is False
    monkeypatch.delenv(v3.SCHEMA_ENV)
    del latest.io.Hidden  # an early V3 without what the adapter needs: V1
    assert v3.host_loads_v3() is False
    monkeypatch.setitem(sys.modules, "nodes", host_nodes_module(load_v1_only))
    latest.io.Hidden = object()
    assert v3.host_loads_v3() is False


# ------------------------------------------------------------------------------ in ComfyUI 0.3.64

@pytest.mark.comfyui
def test_comfyui_registers_every_pal_node_as_v3_described_as_its_v1_class(comfy_server):
    report = schema_report(comfy_server)
    assert set(report) == set(NODE_CLASS_MAPPINGS)
    for name, seen in report.items():
        assert seen["v3"], f"{name} was registered as a V1 class"
        differs = seen["differs"]
        if getattr(NODE_CLASS_MAPPINGS[name], "OUTPUT_NODE", False):
            (served_input, v1_input), (served_order, v1_order) = differs.pop("input"), differs.pop("input_order")
            assert served_input.pop("hidden") == OUTPUT_NODE_HIDDEN and served_input == v1_input, name
            assert served_order.pop("hidden") == list(OUTPUT_NODE_HIDDEN) and served_order == v1_order, name
        assert differs == {}, (name, differs)


@pytest.mark.comfyui
def test_object_info_lists_dropdowns_widgets_and_flags_as_v1_did(comfy_server):
    info = comfy_server.object_info()
    loader = info["PALLoadDetector"]
    model, options = loader["input"]["required"]["model"]
    assert isinstance(model, list) and model[0] == "default" and options["default"] == "default"
    assert loader["input_order"] == {"required": ["model", "device", "precision", "input_size"],
                                     "optional": ["download_if_missing", "allow_torchscript"]}
    assert info["PALDetectArtifacts"]["output_is_list"] == [False, False, False, True]
    assert info["PALAutoFix"]["deprecated"] is True and info["PALAutoFix"]["category"] == "PAL/deprecated"
    assert "deprecated" not in info["PALAutoFixV2"] or info["PALAutoFixV2"]["deprecated"] is False
    assert info["PALLoadDetector"]["output"] == ["PAL_DETECTOR", "STRING"]
    assert info["PALLoadDetector"]["display_name"] == "Load Artifact Detector (PAL)"


def score_prompt(**loader_inputs) -> dict:
    """Load Detector -> PAR Score (an output node) on an example input image."""
    inputs = {"model": "pal-lite", "device": "cpu", "precision": "fp32", "input_size": -1,
              "download_if_missing": False, **loader_inputs}
    return {"1": {"class_type": "PALLoadDetector", "inputs": inputs},
            "2": {"class_type": "LoadImage", "inputs": {"image": EXAMPLE_IMAGE}},
            "3": {"class_type": "PALPARScore", "inputs": {"threshold": 0.5, "images": ["2", 0], "detector": ["1", 0]}}}


@pytest.mark.comfyui
def test_a_value_the_dropdown_does_not_offer_is_refused_before_the_run(comfy_server):
    with pytest.raises(HostError) as refused:
        comfy_server.queue(score_prompt(device="tpu"))
    assert "value_not_in_list" in str(refused.value) and "device" in str(refused.value)
    with pytest.raises(HostError) as refused:
        comfy_server.queue(score_prompt(input_size=9000))
    assert "value_bigger_than_max" in str(refused.value)


@pytest.mark.comfyui
def test_validate_inputs_still_answers_with_our_message(comfy_server):
    with pytest.raises(HostError) as refused:
        comfy_server.queue(score_prompt(model="no-such-model"))
    assert "custom_validation_failed" in str(refused.value)
    assert "is neither a catalogue model nor a file in models/pal4vst" in str(refused.value)


@pytest.mark.comfyui
def test_v3_nodes_run_and_show_what_v1_showed(comfy_server):
    finished = comfy_server.run(score_prompt())
    (loaded,) = finished.text("1")
    assert loaded.startswith("pal_lite (safetensors, fp32 on cpu) from ")
    (scored,) = finished.text("3")
    par = finished.outputs["3"]["par"]
    assert len(par) == 1 and 0.0 <= par[0] <= 1.0 and scored == f"#0  PAR {par[0]:.4f}  ({par[0]:.1%} of pixels)"


# The saved workflows of every earlier release run on these V3 nodes in tests/test_workflow_corpus_comfyui.py:
# its server is this module's (comfy_host.comfy_server), whose nodes the first test above shows are V3.


@pytest.fixture(scope="module")
def adapter_probe(comfy_install) -> dict:
    """tests/v3_adapter_probe.py's report, run by ComfyUI's Python against its comfy_api."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PAL_"))}
    result = subprocess.run([str(comfy_install.python), str(PROBE), str(ROOT / "nodes" / "v3.py")],
                            cwd=comfy_install.source, env={**env, **HOST_ENV}, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.comfyui
def test_the_adapter_hands_hidden_inputs_and_inputs_to_the_v1_function(adapter_probe):
    assert adapter_probe["is_v3"]
    assert adapter_probe["result"] == ["a", [0, 1, 2]]
    assert adapter_probe["ui"] == {"text": ["7:a:['1', '2']:hi"]}  # UNIQUE_ID and PROMPT reached it as V1 names
    assert adapter_probe["not_idempotent"] == [True, False]  # cached per node id, as V1 with UNIQUE_ID was


@pytest.mark.comfyui
def test_the_adapter_describes_a_v1_class_as_v1_did(adapter_probe):
    info = adapter_probe["info"]
    assert info["input"]["required"] == {"mode": [["a", "b"], {"default": "a"}],
                                         "count": ["INT", {"default": 2, "min": 1, "max": 5, "display": "slider"}]}
    assert info["input"]["optional"] == {"note": ["STRING", {"default": "", "multiline": True}]}
    assert info["input"]["hidden"] == {"unique_id": ["UNIQUE_ID"], "prompt": ["PROMPT"]}  # V3 names them itself
    assert info["input_order"]["required"] == ["mode", "count"]
    assert info["output"] == ["STRING", "INT"] and info["output_is_list"] == [False, True]
    assert info["output_name"] == ["text", "count"] and info["display_name"] == "Echo (test)"


@pytest.mark.comfyui
def test_validation_and_fingerprint_keep_the_v1_functions_parameters(adapter_probe):
    assert adapter_probe["validate_args"] == ["cls", "mode"]  # ComfyUI skips its own checks of these inputs only
    assert adapter_probe["validate_b"] == "mode b is refused" and adapter_probe["validate_a"] is True
    assert adapter_probe["fingerprint"] == "a2"


@pytest.mark.comfyui
def test_an_async_v1_function_becomes_an_async_v3_node(adapter_probe):
    assert adapter_probe["async_function"] == "EXECUTE_NORMALIZED_ASYNC"
    assert adapter_probe["async_result"] == ["X"]


@pytest.mark.comfyui
def test_what_the_adapter_cannot_carry_is_named(adapter_probe):
    assert adapter_probe["unknown_hidden"].startswith("TypeError: hidden input 'x': 'SECRET' is no hidden value")
    assert "UNIQUE_ID" in adapter_probe["unknown_hidden"]
    assert adapter_probe["unknown_output_key"] == ("TypeError: a V1 node returned ['expand']: the V3 adapter carries "
                                                   "only 'ui' and 'result'")
