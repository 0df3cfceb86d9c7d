"""Runs in ComfyUI's venv, in its source folder (tests/test_comfy_v3.py starts it): nodes/v3.py's adapter
on small V1 classes with what the PAL nodes do not use yet (a hidden input, an async function) and what
they do (a dropdown, VALIDATE_INPUTS, IS_CHANGED, ui + result), called through comfy_api's own machinery
the way 0.3.64's execution.py calls a V3 node: a class clone holding the hidden values, and
make_locked_method_func. Prints one JSON object of what it saw.

    python tests/v3_adapter_probe.py PATH/TO/nodes/v3.py
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import sys

sys.path.insert(0, ".")  # ComfyUI's source folder: comfy_api
from comfy_api.internal import first_real_override, make_locked_method_func  # noqa: E402
from comfy_api.latest import io  # noqa: E402


def load_adapter(path: str):
    spec = importlib.util.spec_from_file_location("pal_v3_adapter", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Echo:
    CATEGORY = "testing"
    FUNCTION = "echo"
    RETURN_TYPES = ("STRING", "INT")
    RETURN_NAMES = ("text", "count")
    OUTPUT_IS_LIST = (False, True)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mode": (["a", "b"], {"default": "a"}),
                             "count": ("INT", {"default": 2, "min": 1, "max": 5, "display": "slider"})},
                "optional": {"note": ("STRING", {"default": "", "multiline": True})},
                "hidden": {"node": "UNIQUE_ID", "graph": ("PROMPT",)}}

    @classmethod
    def VALIDATE_INPUTS(cls, mode):
        return True if mode != "b" else "mode b is refused"

    @classmethod
    def IS_CHANGED(cls, mode, count):
        return f"{mode}{count}"

    def echo(self, mode, count, node, graph, note=""):
        return {"ui": {"text": [f"{node}:{mode}:{sorted(graph)}:{note}"]}, "result": (mode, list(range(count)))}


class AsyncEcho:
    CATEGORY = "testing"
    FUNCTION = "echo"
    RETURN_TYPES = ("STRING",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {})}}

    async def echo(self, text):
        await asyncio.sleep(0)
        return (text.upper(),)


def named(hidden: str):
    return type("Odd", (), {"FUNCTION": "f", "RETURN_TYPES": (), "f": lambda self: (),
                            "INPUT_TYPES": classmethod(lambda cls: {"required": {}, "hidden": {"x": hidden}})})


def error_of(call) -> str:
    try:
        call()
    except Exception as error:  # what the adapter says, for the test to read
        return f"{type(error).__name__}: {error}"
    return ""


def main(adapter_path: str) -> dict:
    v3 = load_adapter(adapter_path)
    echo = v3.v3_node("PALEcho", Echo, "Echo (test)")
    echo.GET_SCHEMA()
    clone = echo.PREPARE_CLASS_CLONE({io.Hidden.unique_id: "7", io.Hidden.prompt: {"1": {}, "2": {}}})
    ran = make_locked_method_func(echo, echo.FUNCTION, clone)(mode="a", count=3, note="hi")
    validate = first_real_override(echo, "validate_inputs")
    fingerprint = make_locked_method_func(echo, "fingerprint_inputs", clone)
    later = v3.v3_node("PALAsyncEcho", AsyncEcho)
    later.GET_SCHEMA()
    later_ran = asyncio.run(make_locked_method_func(later, later.FUNCTION, later.PREPARE_CLASS_CLONE({}))(text="x"))
    return {
        "info": echo.GET_NODE_INFO_V1(),
        "is_v3": issubclass(echo, io.ComfyNode),
        "not_idempotent": [echo.NOT_IDEMPOTENT, later.NOT_IDEMPOTENT],
        "result": list(ran.args), "ui": ran.ui,
        "validate_args": inspect.getfullargspec(validate).args,
        "validate_b": make_locked_method_func(echo, "validate_inputs", clone)(mode="b"),
        "validate_a": make_locked_method_func(echo, "validate_inputs", clone)(mode="a"),
        "fingerprint": fingerprint(mode="a", count=2),
        "async_function": later.FUNCTION, "async_result": list(later_ran.args),
        "unknown_hidden": error_of(lambda: v3.v3_node("PALOdd", named("SECRET"))),
        "unknown_output_key": error_of(lambda: v3.node_output({"result": (), "expand": {}})),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1]), default=str))
