"""Zoom-in refinement: crop plan, inpainters, composite, and how well an inpainter restored a region."""
