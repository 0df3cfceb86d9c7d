"""The pack in ComfyUI's real web front end, served by the real server, in headless Chromium: 0.3.64's own
front end (1.27.10, the gate: every test), and the newest release on PyPI (comfy_host.NEWEST_FRONT_END,
served with --front-end-root: the tests marked ON_EVERY_FRONT_END, i.e. the extension, the templates
browser, every example loaded and the PAL-only ones run with PAR on their nodes).

Every example workflow is loaded as a user loads it from the Templates browser; its nodes must all be
known (no red node), none may overlap another, groups must not cut through nodes, the front end must
turn it into the same prompt as its API twin, and fit-to-view must keep the labels drawn. The examples
that need nothing but the pack are queued from the page, and the PAR each PAL node measured must be
shown on that node (web/pal_results.js) exactly as /history has it.

Screenshots (100%, fit to view, after the run) go to $PAL_TEST_ARTIFACTS/browser (default:
out/test-artifacts/browser) for people to look at.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from browser import BrowserError, Chromium, find_chromium
from comfy_host import NEWEST_FRONT_END
from pal_nodes import NODE_CLASS_MAPPINGS
from tiny_sd15 import write_tiny_sd15
from workflow_corpus import corpus_members, with_added_defaults

pytestmark = pytest.mark.comfyui

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"
PACK = "pal-nodes"  # the folder the harness installs the pack into: the templates browser's module name
EXAMPLES = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
# Workflows saved with earlier releases (tests/workflow_corpus.py), those that need no checkpoint; the
# oldest release's (one inpainter loader, a prompt on Auto Fix / Zoom Inpaint) are also run from the page.
SAVED_BEFORE = [member for member in corpus_members() if not member.needs_checkpoint]
RUN_FROM_THE_PAGE = SAVED_BEFORE[0].release
NEEDS_A_CHECKPOINT = {"CheckpointLoaderSimple"}
# The front ends a test runs on: the server fixture (tests/comfy_host.py) serving each.
BUNDLED = "bundled-1.27"
NEWEST = f"newest-{NEWEST_FRONT_END}"
SERVERS = {BUNDLED: "comfy_server", NEWEST: "comfy_server_newest_front_end"}
ON_EVERY_FRONT_END = pytest.mark.parametrize("page", [BUNDLED, NEWEST], indirect=True)
SHOWS_PAR = {"PALDetectArtifacts", "PALPARScore", "PALRankByPAR", "PALAutoFixV2", "PALAutoFix"}


def load_example(name: str) -> str:
    return LOAD % {"workflow": FROM_TEMPLATES % {"pack": PACK, "name": json.dumps(name)}, "name": json.dumps(name)}


def same_prompt(sent: dict, twin: dict) -> bool:
    def strip(prompt):
        return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()}
    return strip(sent) == strip(twin)


def pal_only(name: str) -> bool:
    prompt = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    return not any(node["class_type"] in NEEDS_A_CHECKPOINT for node in prompt.values())


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("PAL_TEST_ARTIFACTS") or ROOT / "out" / "test-artifacts") / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def shot_name(name: str, what: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() + f"-{what}.png"


WAIT_FOR_APP = """(async () => {
  performance.setResourceTimingBufferSize(1000000);  // every request is kept: see test_what_the_front_end_misses...
  const deadline = Date.now() + 180000;
  while (!(window.comfyAPI?.app?.app?.graph && window.comfyAPI.app.app.canvas)) {
    if (Date.now() > deadline) throw new Error("ComfyUI's front end did not start");
    await new Promise(r => setTimeout(r, 200));
  }
  const app = window.comfyAPI.app.app;
  await new Promise(r => setTimeout(r, 1500));  // extensions' setup hooks
  await app.extensionManager.setting.set("Comfy.Minimap.Visible", false);  // it covers a corner of the canvas
  return app.extensions.map(e => e.name);
})()"""

FROM_TEMPLATES = """await (async () => {
  const response = await fetch("/api/workflow_templates/%(pack)s/" + encodeURIComponent(%(name)s) + ".json");
  if (!response.ok) throw new Error("templates route: HTTP " + response.status);
  return await response.json();
})()"""

LOAD = """(async () => {
  const app = window.comfyAPI.app.app, LiteGraph = window.LiteGraph;
  await app.loadGraphData(%(workflow)s, true, false, %(name)s,
                          {showMissingNodesDialog: false, showMissingModelsDialog: false});
  const deadline = Date.now() + 20000;  // image previews change nothing if the nodes are big enough: wait for them
  while (app.graph._nodes.some(n => n.type === "LoadImage" && !(n.imgs?.length && n.imgs[0].complete))
         && Date.now() < deadline) await new Promise(r => setTimeout(r, 200));
  app.canvas.ds.scale = 1; app.canvas.ds.offset = [40, 20]; app.canvas.setDirty(true, true);
  await new Promise(r => setTimeout(r, 1200));
  const title = LiteGraph.NODE_TITLE_HEIGHT;
  return {
    nodes: app.graph._nodes.map(n => ({id: n.id, type: n.type, title: n.title, errors: !!n.has_errors,
        registered: n.type in LiteGraph.registered_node_types,
        rect: [n.pos[0], n.pos[1] - title, n.size[0], n.size[1] + title]})),
    groups: app.graph._groups.map(g => ({title: g.title, rect: Array.from(g._bounding)})),
    prompt: (await app.graphToPrompt()).output,
  };
})()"""

FIT_TO_VIEW = """(async () => {
  const app = window.comfyAPI.app.app, title = window.LiteGraph.NODE_TITLE_HEIGHT, xs = [], ys = [];
  for (const n of app.graph._nodes) { xs.push(n.pos[0], n.pos[0] + n.size[0]); ys.push(n.pos[1] - title, n.pos[1] + n.size[1]); }
  for (const g of app.graph._groups) { const b = g._bounding; xs.push(b[0], b[0] + b[2]); ys.push(b[1], b[1] + b[3]); }
  const x0 = Math.min(...xs), y0 = Math.min(...ys);
  app.canvas.ds.fitToBounds([x0, y0, Math.max(...xs) - x0, Math.max(...ys) - y0]);  // what "Fit view" does
  app.canvas.setDirty(true, true);
  await new Promise(r => setTimeout(r, 1000));
  return {scale: app.canvas.ds.scale, lowQuality: app.canvas.low_quality};
})()"""

RUN = """(async () => {
  const app = window.comfyAPI.app.app;
  const before = new Set(Object.keys(await (await fetch("/api/history")).json()));
  if (%(clear)s) for (const n of app.graph._nodes) { const w = n.widgets?.find(w => w.name === "results"); if (w) w.value = ""; }
  for (const n of app.graph._nodes.filter(n => n.type === "SaveImage")) {  // files apart from other tests' in this server
    const prefix = n.widgets.find(w => w.name === "filename_prefix");
    if (!prefix.value.startsWith("browser-test/")) prefix.value = "browser-test/" + prefix.value;
  }
  await app.queuePrompt(0, 1);
  const deadline = Date.now() + %(timeout_ms)d;
  let entry = null;
  while (Date.now() < deadline) {
    const history = await (await fetch("/api/history")).json();
    const id = Object.keys(history).find(k => !before.has(k));
    if (id && history[id].status?.completed !== undefined && history[id].status.status_str) { entry = history[id]; break; }
    await new Promise(r => setTimeout(r, 500));
  }
  if (!entry) throw new Error("the queued prompt did not finish in time");
  await new Promise(r => setTimeout(r, 1500));  // executed messages reach the nodes
  const shown = {};
  for (const n of app.graph._nodes) {
    const widget = n.widgets?.find(w => w.name === "results");
    if (widget) shown[n.id] = {value: widget.value, visible: !!widget.element?.isConnected, type: n.type};
  }
  return {status: entry.status, outputs: entry.outputs, shown};
})()"""


def server_for(request, front_end: str):
    """The real ComfyUI of the session serving this front end (tests/comfy_host.py's fixtures)."""
    try:
        return request.getfixturevalue(SERVERS[front_end])
    except pytest.FixtureLookupError:
        pytest.skip("the real-ComfyUI harness (tests/comfy_host.py, fixture comfy_server) is not in this checkout")


@pytest.fixture(scope="module")
def server(request):
    return server_for(request, BUNDLED)


@pytest.fixture(scope="module")
def browsers(request, tmp_path_factory):
    """One Chromium per front end, opened when a test first needs it, closed with the module."""
    if find_chromium() is None:
        reason = "no chromium for the browser tests (Debian: apt-get install -y chromium)"
        if os.environ.get("PAL_REQUIRE_COMFYUI"):
            pytest.fail(reason)
        pytest.skip(reason)
    opened: dict[str, Chromium] = {}

    def page_for(front_end: str) -> Chromium:
        if front_end not in opened:
            server = server_for(request, front_end)
            browser = Chromium.start(server.url + "/", tmp_path_factory.mktemp("chromium"))
            opened[front_end] = browser
            browser.front_end, browser.server = front_end, server
            browser.extensions = browser.evaluate(WAIT_FOR_APP, timeout=200)
        return opened[front_end]

    try:
        yield page_for
    finally:
        for browser in opened.values():
            browser.close()


@pytest.fixture
def page(browsers, request) -> Chromium:
    """The browser on 0.3.64's own front end, or on the one the test is parametrized with (ON_EVERY_FRONT_END)."""
    return browsers(getattr(request, "param", BUNDLED))


def missing_checkpoint(node: dict, prompt: dict, server) -> bool:
    """A checkpoint loader flagged because its model file is not installed: newer front ends (not 1.27) mark
    it, and the test ComfyUI has none of the checkpoints the generation examples name (users pick theirs)."""
    if node["type"] not in NEEDS_A_CHECKPOINT:
        return False
    name = prompt[str(node["id"])]["inputs"]["ckpt_name"]
    return name not in server.object_info()[node["type"]]["input"]["required"]["ckpt_name"][0]


def own_errors(browser: Chromium) -> list[str]:
    """Page errors that come from the pack's own script (ComfyUI's front end logs some of its own)."""
    return [e for e in browser.page_errors if f"/extensions/{PACK}/" in e]


def overlaps(a: list[float], b: list[float]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def inside(inner: list[float], outer: list[float]) -> bool:
    return (outer[0] <= inner[0] and inner[0] + inner[2] <= outer[0] + outer[2]
            and outer[1] <= inner[1] and inner[1] + inner[3] <= outer[1] + outer[3])


@ON_EVERY_FRONT_END
def test_the_results_extension_is_served_and_registered(page):
    assert f"/extensions/{PACK}/pal_results.js" in page.server.get("/extensions")
    assert "PAL.Results" in page.extensions
    assert own_errors(page) == []


def test_the_templates_browser_lists_every_example_with_its_thumbnail(server):
    assert sorted(server.get("/api/workflow_templates")[PACK]) == EXAMPLES
    for name in EXAMPLES:
        status, body = server.request(f"/api/workflow_templates/{PACK}/{name.replace(' ', '%20')}.jpg")
        assert status == 200 and body[:3] == b"\xff\xd8\xff", name  # a JPEG, as the browser asks for


# A dialog: PrimeVue's .p-dialog in front end 1.27, an element with role=dialog in newer ones.
DIALOG_JS = 'const DIALOG = ".p-dialog, [role=dialog]";'
TEMPLATES_DIALOG = """(async () => {
  %(dialog)s
  const app = window.comfyAPI.app.app, sleep = (ms) => new Promise(r => setTimeout(r, ms));
  await app.extensionManager.command.execute("Comfy.BrowseTemplates");
  const deadline = Date.now() + 30000;
  let entry = null;
  while (!entry && Date.now() < deadline) {
    entry = [...document.querySelectorAll(DIALOG + " *")].find(e => !e.children.length && e.textContent.trim() === "%(pack)s");
    await sleep(300);
  }
  if (!entry) throw new Error("the templates browser lists no category %(pack)s");
  entry.click();
  const dialog = document.querySelector(DIALOG), names = %(names)s;
  // Shown once the category shown before is gone: one thumbnail per example (fetched, then shown from a
  // blob: URL), every title listed.
  const loaded = () => [...dialog.querySelectorAll("img")].filter(i => i.complete && i.naturalWidth > 0);
  while (Date.now() < deadline + 30000) {
    const images = dialog.querySelectorAll("img").length;
    if (images === names.length && loaded().length === images && names.every(n => dialog.innerText.includes(n))) break;
    await sleep(300);
  }
  return {text: dialog.innerText, loaded: loaded().length, images: dialog.querySelectorAll("img").length};
})()"""


CLOSE_DIALOG = """(async () => {
  %(dialog)s
  for (const dialog of document.querySelectorAll(DIALOG)) {  // its close button: PrimeVue's, or the one labelled Close
    const close = dialog.querySelector(".p-dialog-close-button") ?? [...dialog.querySelectorAll("button")].find(
        b => /close/i.test(b.getAttribute("aria-label") ?? "") || /close/i.test(b.title ?? ""));
    close?.click();
  }
  const deadline = Date.now() + 10000;
  while (document.querySelector(DIALOG) && Date.now() < deadline) await new Promise(r => setTimeout(r, 200));
  return !document.querySelector(DIALOG);
})()""" % {"dialog": DIALOG_JS}


@ON_EVERY_FRONT_END
def test_the_templates_browser_shows_each_example_titled_with_its_thumbnail(page):
    shown = page.evaluate(TEMPLATES_DIALOG % {"pack": PACK, "names": json.dumps(EXAMPLES), "dialog": DIALOG_JS})
    page.screenshot(artifacts_dir() / f"templates-browser-{page.front_end}.png")
    assert page.evaluate(CLOSE_DIALOG), "the templates browser did not close"
    lines = shown["text"].splitlines()
    for name in EXAMPLES:  # title, and (1.27: under it) the description ComfyUI derives from the file name
        assert name in lines, name
        assert page.front_end != BUNDLED or name.replace("-", " ") in lines, name
    assert shown["loaded"] == shown["images"] == len(EXAMPLES), shown


@ON_EVERY_FRONT_END
@pytest.mark.parametrize("name", EXAMPLES)
def test_example_loads_in_the_front_end_without_overlaps(name, page):
    graph = page.evaluate(load_example(name))
    page.screenshot(artifacts_dir() / shot_name(name, f"100-{page.front_end}"))
    nodes, groups = graph["nodes"], graph["groups"]
    assert [n["type"] for n in nodes if not n["registered"] or n["errors"] and not
            missing_checkpoint(n, graph["prompt"], page.server)] == []  # no red node
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            assert not overlaps(a["rect"], b["rect"]), f"{a['title']} overlaps {b['title']}: {a['rect']} {b['rect']}"
        for group in groups:  # a node is in a group or clear of it, never cut by its edge
            assert inside(a["rect"], group["rect"]) or not overlaps(a["rect"], group["rect"]), (a["title"], group["title"])
    for i, a in enumerate(groups):
        for b in groups[i + 1:]:
            assert not overlaps(a["rect"], b["rect"]), f"groups {a['title']} and {b['title']} overlap"
    notes = [n for n in nodes if n["type"] == "Note"]
    assert len(notes) == 1 and groups, "every example explains itself in a Note and groups its steps"
    # the front end sends exactly the API twin (same nodes, same values, same links)
    assert same_prompt(graph["prompt"], json.loads((WORKFLOWS / "api" / f"{name}.json").read_text()))
    fit = page.evaluate(FIT_TO_VIEW)
    page.screenshot(artifacts_dir() / shot_name(name, f"fit-{page.front_end}"))
    assert not fit["lowQuality"], f"fit to view zooms out to {fit['scale']:.2f}: too far for labels to be drawn"


@ON_EVERY_FRONT_END
@pytest.mark.parametrize("name", [n for n in EXAMPLES if pal_only(n)])
def test_pal_example_runs_from_the_page_and_shows_par_on_its_nodes(name, page):
    page.evaluate(load_example(name))
    started = time.monotonic()
    run = page.evaluate(RUN % {"timeout_ms": 600_000, "clear": "false"}, timeout=660)
    page.evaluate(FIT_TO_VIEW)
    page.screenshot(artifacts_dir() / shot_name(name, f"after-run-{page.front_end}"))
    assert run["status"]["status_str"] == "success", run["status"]
    showing = {node_id: s for node_id, s in run["shown"].items() if s["type"] in SHOWS_PAR}
    assert showing, "the example has no node that shows PAR"
    for node_id, shown in showing.items():
        ui = run["outputs"][node_id]  # what the node returned as `ui`, kept in /history
        assert shown["visible"] and shown["value"] == "\n".join(ui["text"]), (node_id, shown, ui)
        lines = shown["value"].splitlines()
        assert len(ui["par"]) >= 1 and all(f"PAR {p:.4f}" in shown["value"] or f"-> {p:.4f}" in shown["value"]
                                           for p in ui["par"]), (lines, ui["par"])
    assert any(p > 0 for s in showing for p in run["outputs"][s]["par"]), "the detector found nothing in the example"
    # Run again: ComfyUI answers from its cache and executes nothing, so no node gets onExecuted; the
    # boxes (emptied first) are filled from the run's history.
    again = page.evaluate(RUN % {"timeout_ms": 120_000, "clear": "true"}, timeout=180)
    assert again["status"]["status_str"] == "success"
    assert any(kind == "execution_cached" and data["nodes"] for kind, data in again["status"]["messages"])
    assert {k: s["value"] for k, s in again["shown"].items()} == {k: s["value"] for k, s in run["shown"].items()}
    assert own_errors(page) == [], own_errors(page)
    assert time.monotonic() - started < 600


SET_WIDGETS = """(() => {
  const app = window.comfyAPI.app.app, changes = %(changes)s;
  for (const [type, values] of Object.entries(changes))
    for (const node of app.graph._nodes.filter(n => n.type === type))
      for (const [name, value] of Object.entries(values)) node.widgets.find(w => w.name === name).value = value;
  return true;
})()"""
TINY_CHECKPOINT = "tiny_sd15_test.safetensors"


@pytest.mark.parametrize("name", [n for n in EXAMPLES if not pal_only(n)])
def test_generation_example_runs_from_the_page_with_a_tiny_checkpoint(name, page, server):
    """The generation examples as a user runs them, with their checkpoint swapped for a random tiny SD1.5 and
    sizes and steps made small for a CPU: generation, then PAL on what was generated, PAR on the node."""
    checkpoint = server.base / "models" / "checkpoints" / TINY_CHECKPOINT
    if not checkpoint.is_file():
        write_tiny_sd15(checkpoint)
    page.evaluate(load_example(name))
    page.evaluate(SET_WIDGETS % {"changes": json.dumps({
        "CheckpointLoaderSimple": {"ckpt_name": TINY_CHECKPOINT}, "EmptyLatentImage": {"width": 64, "height": 64},
        "KSampler": {"steps": 2}, "PALComfyInpainter": {"steps": 2}})})
    run = page.evaluate(RUN % {"timeout_ms": 900_000, "clear": "false"}, timeout=960)
    page.evaluate(FIT_TO_VIEW)
    page.screenshot(artifacts_dir() / shot_name(name, "after-run-tiny-checkpoint"))
    assert run["status"]["status_str"] == "success", run["status"]
    (shown,) = [s for s in run["shown"].values() if s["type"] in SHOWS_PAR]
    node_id = next(k for k, s in run["shown"].items() if s is shown)
    ui = run["outputs"][node_id]
    assert shown["value"] == "\n".join(ui["text"]) and "PAR" in shown["value"]
    if shown["type"] == "PALRankByPAR":  # every seed of the batch listed, best first, top_k kept
        lines = shown["value"].splitlines()
        assert len(lines) == 6 and sum(line.endswith("kept") for line in lines) == 2 and len(ui["par"]) == 6


@pytest.mark.parametrize("member", SAVED_BEFORE, ids=lambda member: member.id)
def test_workflows_saved_with_earlier_releases_still_load_and_run(member, page):
    """Deprecated nodes keep their ids and widgets, new inputs come after the old ones: old files load with
    every value in place, and the front end fills in the defaults of the inputs added since."""
    graph = page.evaluate(LOAD % {"workflow": member.ui.read_text(encoding="utf-8"), "name": json.dumps(member.name)})
    assert [n["type"] for n in graph["nodes"] if n["errors"] or not n["registered"]] == []
    assert same_prompt(graph["prompt"], with_added_defaults(member, member.api_prompt, NODE_CLASS_MAPPINGS))
    if member.release != RUN_FROM_THE_PAGE:  # every member runs in tests/test_workflow_corpus_comfyui.py
        return
    run = page.evaluate(RUN % {"timeout_ms": 600_000, "clear": "false"}, timeout=660)
    page.screenshot(artifacts_dir() / shot_name(member.id, "saved-before-after-run"))
    assert run["status"]["status_str"] == "success", run["status"]


def test_browser_errors_name_what_went_wrong(page):
    with pytest.raises(BrowserError, match="no such thing"):
        page.evaluate("(async () => { throw new Error('no such thing'); })()")


# What each front end asked this ComfyUI 0.3.64 for and did not get (docs/comfyui.md): newer front ends read
# the queue and history through the Jobs API, subgraph blueprints and the templates' logo index, which need a
# newer backend (and a newer comfyui-workflow-templates). No gap: files of the user's that do not exist yet, and
# the icon Chromium asks for by itself (1.27 has none at /favicon.ico).
NEEDS_A_NEWER_BACKEND = {BUNDLED: set(), NEWEST: {"/api/jobs", "/api/global_subgraphs", "/templates/index_logo.json"}}
NO_GAP = re.compile(r"^/((api/)?(userdata(/.*)?|user\.css)|favicon\.ico)$")
NOT_FOUND = """performance.getEntriesByType("resource").filter(e => e.responseStatus === 404)
  .map(e => new URL(e.name).pathname)"""


@ON_EVERY_FRONT_END
def test_what_the_front_end_misses_in_this_backend_is_what_the_docs_say(page):
    """Runs after the tests above, so the page has loaded, run and browsed templates."""
    missing = {path for path in page.evaluate(NOT_FOUND) if not NO_GAP.match(path)}
    assert missing <= NEEDS_A_NEWER_BACKEND[page.front_end], missing
    if page.front_end == NEWEST:  # the gap users see: its queue panel stays empty
        assert "/api/jobs" in missing
    assert own_errors(page) == []
