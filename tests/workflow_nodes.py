"""Test-only V1 node classes: each exercises one part of ComfyUI's node contract."""

from __future__ import annotations

import torch

CALLS: dict[str, int] = {}


def count(name: str) -> None:
    CALLS[name] = CALLS.get(name, 0) + 1


class IntList:
    """OUTPUT_IS_LIST: start, start+1, ... (count items)."""
    RETURN_TYPES = ("INT",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"count": ("INT", {"default": 3, "min": 1, "max": 10}),
                             "start": ("INT", {"default": 0})}}

    def make(self, count, start):
        CALLS.setdefault("IntList", 0)
        CALLS["IntList"] += 1
        return (list(range(start, start + count)),)


class AddInt:
    """A plain node: called once per list item."""
    RETURN_TYPES = ("INT",)
    FUNCTION = "add"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT", {"forceInput": True}), "b": ("INT", {"default": 0, "min": -100, "max": 100})}}

    def add(self, a, b):
        count("AddInt")
        return (a + b,)


class Collect:
    """INPUT_IS_LIST output node: gets whole lists, reports them in its ui and returns their sum."""
    RETURN_TYPES = ("INT",)
    FUNCTION = "collect"
    INPUT_IS_LIST = True
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"values": ("INT", {"forceInput": True})},
                "optional": {"label": ("STRING", {"default": "x"})}}

    def collect(self, values, label=("x",)):
        count("Collect")
        return {"ui": {"values": list(values), "label": list(label)}, "result": (sum(values),)}


class Sink:
    """An output node that accepts anything ("*") and records what it got."""
    RETURN_TYPES = ()
    FUNCTION = "take"
    OUTPUT_NODE = True
    SEEN: list = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*",)}}

    def take(self, value):
        count("Sink")
        Sink.SEEN.append(value)
        return {"ui": {"seen": [repr(value)]}}


class Settings:
    """Widgets of every kind, a seed with its frontend-only control widget, a combo."""
    RETURN_TYPES = ("INT", "FLOAT", "STRING")
    FUNCTION = "emit"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**32}),
                             "strength": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0}),
                             "mode": (["fast", "slow"],)},
                "optional": {"note": ("STRING", {"default": "none", "multiline": True})}}

    def emit(self, seed, strength, mode, note="none"):
        return (seed, strength, f"{mode}:{note}")


class Blend:
    """Inputs of two types, for bypass matching: output IMAGE must pass through `image`, not `mask`."""
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "blend"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask": ("MASK",), "image": ("IMAGE",)}}

    def blend(self, mask, image):
        return (image * 0, mask * 0)


class Mixer:
    """For bypass matching: an exact type match (`image`) wins over an earlier "*" input."""
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "mix"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask": ("MASK",), "extra": ("*",), "image": ("IMAGE",)}}

    def mix(self, mask, extra, image):
        return (image * 0,)


class OddRejecter:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0, "min": 0, "max": 10})}}

    @classmethod
    def VALIDATE_INPUTS(cls, value):
        return True if value % 2 == 0 else f"value must be even, got {value}"

    def run(self, value):
        return (value,)


class WrongArity:
    RETURN_TYPES = ("INT", "INT")
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def run(self):
        return (1,)


class Expander:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def run(self):
        return {"result": (1,), "expand": {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 1}}}}


class ImageSource:
    """A deterministic 2-image batch, 8x6."""
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def make(self):
        count("ImageSource")
        values = torch.linspace(0, 1, 2 * 6 * 8 * 3).reshape(2, 6, 8, 3)
        return (values,)


TEST_NODES = {cls.__name__: cls for cls in (IntList, AddInt, Collect, Sink, Settings, Blend, Mixer, OddRejecter,
                                            WrongArity, Expander, ImageSource)}
