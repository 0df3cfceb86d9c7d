// Shows what the PAL nodes found on the nodes themselves: the loaded model, PAR per image, and the
// summaries of Auto Fix, Zoom Inpaint and Rank by PAR.
//
// The nodes return their numbers as `ui.text` (see nodes/display.py); ComfyUI hands that to
// onExecuted after a run, but draws no text for a custom node by itself. Each such node gets a
// read-only text box, as ComfyUI's own Preview Any has; it is neither saved with the workflow
// nor sent with the prompt. A node whose result came from ComfyUI's cache is not executed again
// and gets no onExecuted: when a run succeeds, its history fills those in.
import { api } from "../../scripts/api.js";
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

const NODES_WITH_RESULTS = new Set(["PALLoadDetector", "PALDetectArtifacts", "PALPARScore", "PALRankByPAR",
  "PALAutoFixV2", "PALAutoFix", "PALZoomInpaintV2", "PALZoomInpaint"]);
const WIDGET_NAME = "results";
const PLACEHOLDERS = { PALLoadDetector: "the loaded model appears here after a run",
  PALZoomInpaintV2: "a line per region appears here after a run", PALZoomInpaint: "a line per region appears here after a run" };

function addResultsBox(node, className) {
  const widget = ComfyWidgets.STRING(node, WIDGET_NAME, ["STRING", { multiline: true }], app).widget;
  widget.serialize = false; // not in the saved workflow's widgets_values
  widget.options.serialize = false; // not sent with the prompt
  widget.element.readOnly = true;
  widget.element.placeholder = PLACEHOLDERS[className] ?? "PAR per image appears here after a run";
  widget.element.dataset.palResults = "true";
  return widget;
}

function showResults(node, text) {
  const widget = node.widgets?.find((w) => w.name === WIDGET_NAME) ?? addResultsBox(node, node.comfyClass);
  widget.value = text;
  node.setDirtyCanvas?.(true, true);
}

async function historyEntry(promptId) {
  // ComfyUI announces success before it files the run in its history: ask until it is there.
  for (let attempt = 0; attempt < 40; attempt++) {
    const response = await api.fetchApi(`/history/${encodeURIComponent(promptId)}`);
    const entry = response.ok ? (await response.json())[promptId] : undefined;
    if (entry?.outputs) return entry;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  return undefined;
}

async function showResultsFromHistory(promptId) {
  const entry = await historyEntry(promptId);
  const prompt = entry?.prompt?.[2] ?? {}; // [number, id, graph, ...]: the graph that ran
  for (const [nodeId, output] of Object.entries(entry?.outputs ?? {})) {
    const node = app.graph?.getNodeById(Number(nodeId));
    // the same node of the graph that ran (not a namesake in a workflow opened since)
    if (node && NODES_WITH_RESULTS.has(node.comfyClass) && prompt[nodeId]?.class_type === node.comfyClass
        && Array.isArray(output?.text)) {
      showResults(node, output.text.join("\n"));
    }
  }
}

app.registerExtension({
  name: "PAL.Results",
  setup() {
    api.addEventListener("execution_success", ({ detail }) => {
      if (detail?.prompt_id) showResultsFromHistory(detail.prompt_id).catch((error) => console.warn("PAL:", error));
    });
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!NODES_WITH_RESULTS.has(nodeData.name)) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      addResultsBox(this, nodeData.name);
      return result;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      if (Array.isArray(message?.text)) showResults(this, message.text.join("\n"));
    };
  },
});
