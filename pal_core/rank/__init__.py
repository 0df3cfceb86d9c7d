"""Ranking images by PAR: streaming scorer, score files, selection (and the Ray Data variant)."""
