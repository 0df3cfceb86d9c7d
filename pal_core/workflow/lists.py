"""ComfyUI's list semantics for calling a node function.

Every input reaches a node as a list (a constant is a list of one). A node with INPUT_IS_LIST gets the
lists whole, in one call. Any other node is called once per item of the longest list, and a shorter
list repeats its last item; a node without inputs is called once. An empty list (an upstream list
output with no items) means nothing to do: the node is not called, where ComfyUI would fail.
"""

from __future__ import annotations

from typing import Callable


def call_over_lists(function: Callable, inputs: dict[str, list], input_is_list: bool) -> list:
    """The results of each call, in order."""
    if input_is_list:
        return [function(**inputs)]
    if not inputs:
        return [function()]
    if any(len(values) == 0 for values in inputs.values()):
        return []
    length = max(len(values) for values in inputs.values())
    return [function(**{name: values[min(index, len(values) - 1)] for name, values in inputs.items()})
            for index in range(length)]
