"""Choosing the best images of a batch by PAR (Perceptual Artifacts Ratio; lower is better)."""

from __future__ import annotations

import torch


def rank_by_par(par: torch.Tensor, top_k: int = 0, max_par: float = 1.0) -> list[int]:
    """Indices of the images to keep, best (lowest PAR) first.

    Keeps images with PAR <= `max_par`, at most `top_k` of them (0 keeps all). Equal scores keep their
    batch order, so the choice is deterministic.
    """
    if par.dim() != 1:
        raise ValueError(f"par has shape {tuple(par.shape)}; expected one score per image [B]")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 keeps all), not {top_k}")
    order = sorted(range(par.shape[0]), key=lambda i: (float(par[i]), i))
    kept = [i for i in order if float(par[i]) <= max_par]
    return kept[:top_k] if top_k else kept
