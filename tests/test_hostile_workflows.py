"""Malformed and hostile workflow documents (issue 13, cases 7 and 8): each ends in exit 2 with a message,
before anything runs or is written; `pal run` never shows a traceback for a bad document."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

from pal_core.cli import main


def node(kind, **inputs):
    return {"class_type": kind, "inputs": inputs}


@pytest.fixture
def place(tmp_path):
    (tmp_path / "in").mkdir()
    Image.fromarray(np.full((8, 8, 3), 90, dtype=np.uint8)).save(tmp_path / "in" / "a.png")
    return tmp_path


def run_text(place, text: str, capsys, *extra) -> tuple[int, str]:
    path = place / "graph.json"
    path.write_text(text)
    code = main(["run", str(path), "--engine", "builtin", "--input-dir", str(place / "in"),
                 "--output-dir", str(place / "out"), "--quiet", *extra])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def run_graph(place, graph, capsys, *extra) -> tuple[int, str]:
    return run_text(place, json.dumps(graph, allow_nan=True), capsys, *extra)


def nothing_written(place) -> bool:
    return not (place / "out").exists() or not any((place / "out").rglob("*"))


GOOD = {"1": node("LoadImage", image="a.png"), "2": node("ImageInvert", image=["1", 0]),
        "3": node("SaveImage", images=["2", 0], filename_prefix="x")}


def test_the_good_graph_runs(place, capsys):
    code, err = run_graph(place, GOOD, capsys)
    assert code == 0, err and (place / "out" / "x_00001_.png").is_file()


# ------------------------------------------------------------------------ case 7: documents


@pytest.mark.parametrize("text, message", [
    ('{"1": {"class_type": "SaveImage", "inputs": {"filename_prefix": ' + "9" * 5000 + "}}}", "too large"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"1": ' + '{"a": ' * 200 + "1" + "}" * 200 + "}", "nested more than 64 levels"),
    ('{"1": {"class_type": "SaveImage", "inputs": {"filename_prefix": ' + "9" * 30 + "}}}", "larger than any input"),
    ('{"1": {"class_type": "SaveImage", "inputs": {"filename_prefix": NaN}}}', "not a finite number"),
    ('{"1": {"class_type": "SaveImage", "inputs": {"filename_prefix": -Infinity}}}', "not a finite number"),
    ('"just text"', "JSON object"),
    ("{}", "empty"),
    ('{"nodes": "all of them"}', "API format"),
])
def test_hostile_documents(place, capsys, text, message):
    code, err = run_text(place, text, capsys)
    assert code == 2 and message in err
    assert nothing_written(place)


def test_a_chain_of_a_thousand_nodes_runs_without_recursion(place, capsys):
    graph = {"1": node("LoadImage", image="a.png")}
    for i in range(2, 1502):
        graph[str(i)] = node("ImageInvert", image=[str(i - 1), 0])
    graph["9999"] = node("SaveImage", images=["1501", 0], filename_prefix="chain")
    code, err = run_graph(place, graph, capsys)
    assert code == 0, err
    saved = np.asarray(Image.open(place / "out" / "chain_00001_.png"))
    assert (np.abs(saved.astype(int) - 90) <= 1).all()  # inverted 1500 times: back where it started (float drift)


def test_a_long_cycle_is_reported_not_a_recursion_error(place, capsys):
    graph = {str(i): node("ImageInvert", image=[str(i + 1 if i < 1500 else 1), 0]) for i in range(1, 1501)}
    graph["9999"] = node("SaveImage", images=["1", 0], filename_prefix="loop")
    code, err = run_graph(place, graph, capsys)
    assert code == 2 and "loops back on itself" in err and nothing_written(place)


def ui_graph(reroutes: int) -> dict:
    """LoadImage -> `reroutes` Reroutes -> SaveImage, as ComfyUI's frontend saves it."""
    nodes = [{"id": 1, "type": "LoadImage", "mode": 0, "inputs": [],
              "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}, {"name": "MASK", "type": "MASK", "links": []}],
              "widgets_values": ["a.png", "image"]}]
    links = []
    for i in range(reroutes):
        node_id = 100 + i
        nodes.append({"id": node_id, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": i + 1}],
                      "outputs": [{"name": "", "type": "IMAGE", "links": [i + 2]}]})
        links.append([i + 1, 1 if i == 0 else node_id - 1, 0, node_id, 0, "IMAGE"])
    last = reroutes + 1
    links.append([last, 100 + reroutes - 1, 0, 2, 0, "IMAGE"])
    nodes.append({"id": 2, "type": "SaveImage", "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": last}],
                  "outputs": [], "widgets_values": ["rerouted"]})
    return {"nodes": nodes, "links": links, "version": 0.4}


def test_a_long_reroute_chain_is_followed_without_recursion(place, capsys):
    code, err = run_graph(place, ui_graph(3000), capsys)
    assert code == 0, err and (place / "out" / "rerouted_00001_.png").is_file()


@pytest.mark.parametrize("field, value, message", [
    ("inputs", {"images": 3}, "nodes[1].inputs is dict"),
    ("widgets_values", "rerouted", "nodes[1].widgets_values is str"),
    ("mode", "on", "nodes[1].mode is str"),
    ("id", [2], "nodes[1].id is list"),
    ("type", 7, "nodes[1].type is int"),
    ("outputs", [5], "nodes[1].outputs[0] is int"),
    ("inputs", [{"name": ["images"], "type": "IMAGE", "link": 1}], "nodes[1].inputs[0].name is list"),
    ("inputs", [{"name": "images", "type": "IMAGE", "link": {"id": 1}}], "nodes[1].inputs[0].link is dict"),
])
def test_ui_fields_of_the_wrong_type(place, capsys, field, value, message):
    graph = {"nodes": [{"id": 1, "type": "LoadImage", "mode": 0, "inputs": [],
                        "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}], "widgets_values": ["a.png", "image"]},
                       {"id": 2, "type": "SaveImage", "mode": 0,
                        "inputs": [{"name": "images", "type": "IMAGE", "link": 1}], "outputs": [],
                        "widgets_values": ["x"]}],
             "links": [[1, 1, 0, 2, 0, "IMAGE"]]}
    graph["nodes"][1][field] = value
    code, err = run_graph(place, graph, capsys)
    assert code == 2 and message in err and nothing_written(place)


@pytest.mark.parametrize("links, message", [
    ([[1, 1, "zero", 2, 0, "IMAGE"]], "links[0] is list"),
    ([{"id": 1}], "links[0] is dict"),
    ("1->2", "links is str"),
    ([[1, 1, -3, 2, 0, "IMAGE"]], "links[0]"),
])
def test_damaged_link_lists(place, capsys, links, message):
    graph = ui_graph(0)
    graph["nodes"] = [graph["nodes"][0], graph["nodes"][-1]]
    graph["links"] = links
    code, err = run_graph(place, graph, capsys)
    assert code == 2 and message in err


def test_many_problems_are_listed_together_and_shortened(place, capsys):
    graph = {str(i): node("SaveImage", filename_prefix=float("nan")) for i in range(1, 40)}
    code, err = run_graph(place, graph, capsys)
    assert code == 2 and err.count("not a finite number") == 12 and "and 27 more" in err


def test_the_python_api_checks_a_dict_as_strictly(place):
    from pal_core.workflow import WorkflowFormatError, run_workflow
    deep: list = []
    for _ in range(200):
        deep = [deep]
    with pytest.raises(WorkflowFormatError, match="nested more than"):
        run_workflow({"1": node("SaveImage", images=deep, filename_prefix="x")}, output_dir=place / "out",
                     engine="builtin")
    with pytest.raises(WorkflowFormatError, match="a set"):
        run_workflow({"1": node("SaveImage", filename_prefix={1, 2})}, output_dir=place / "out", engine="builtin")


# ------------------------------------------------------------------------ case 8: validation catches it first


@pytest.mark.parametrize("value", [None, "a.png", 3, {"x": 1}])
def test_a_constant_where_a_link_is_required(place, capsys, value):
    graph = dict(GOOD, **{"3": node("SaveImage", images=value, filename_prefix="x")})
    code, err = run_graph(place, graph, capsys)
    assert code == 2 and "images" in err and nothing_written(place)
    assert "connect one" in err or "required input is missing" in err


def test_nul_bytes_in_paths_and_names(place, capsys):
    code, err = run_text(place, json.dumps(dict(GOOD, **{"1": node("LoadImage", image="a.png\u0000../../etc")})),
                         capsys)
    assert code == 2 and "NUL" in err and nothing_written(place)
    code = main(["run", str(place / "graph.json"), "--engine", "builtin", "--input-dir", str(place / "in"),
                 "--output-dir", str(place / "out"), "--quiet"])
    assert code == 2


def test_nan_for_a_float_is_refused_even_through_set(place, capsys, tiny_detector_file, monkeypatch):
    graph = {"1": node("LoadImage", image="a.png"), "2": node("ImageScaleBy", image=["1", 0],
                                                              upscale_method="nearest-exact", scale_by=2.0),
             "3": node("SaveImage", images=["2", 0], filename_prefix="x")}
    code, err = run_graph(place, graph, capsys, "--set", "2.scale_by=nan")
    assert code == 2 and "not a finite number" in err and nothing_written(place)
    code, err = run_graph(place, graph, capsys, "--set", "2.scale_by=inf")
    assert code == 2 and "not a finite number" in err


def test_the_failures_come_before_any_file_is_written(place, capsys):
    """Two SaveImage nodes: the second's bad input must stop the first from writing too."""
    graph = dict(GOOD, **{"4": node("SaveImage", images=None, filename_prefix="y")})
    code, err = run_graph(place, graph, capsys)
    assert code == 2 and nothing_written(place)


def test_an_output_dir_that_is_a_file_is_refused_before_running(place, capsys):
    blocker = place / "out"
    blocker.write_text("the user's notes")
    code, err = run_graph(place, GOOD, capsys)
    assert code == 2 and "--output-dir" in err and "is a file" in err
    assert blocker.read_text() == "the user's notes"
