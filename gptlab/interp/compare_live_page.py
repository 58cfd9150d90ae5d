"""The live viewer's page for two models (``heads.py run=<A> compare=<B> serve=true``): one text box drives both.

Self-contained like the one-model page (gptlab/interp/live_page.py; inline CSS and JS, it talks only to its server):
gptlab/interp/web/compare_live.html with its .css/.js and compare_common.*, inlined by gptlab/interp/page_common.py.
After a pause in typing it POSTs the text to ``/api/compare`` and redraws, side by side: the tokens (shaded by
A's head, underlined by B's), a head of A and a head of B (by default A's matched head) with their patterns and
their difference, the clicked query's weights in both, both models' next-token predictions (with and without
their ablations), the matched heads with their similarity and metric deltas on this text, and a grid of each
model's heads with an ablate box under each. ``body[data-updated]`` counts the updates drawn.
"""

from __future__ import annotations

from .live_page import DEBOUNCE_MS
from .page_common import render


def compare_live_page(info: dict) -> str:
    """The page for the two models described by ``LiveCompare.info()``."""
    title = f"{info['a'].get('title', 'A')} vs {info['b'].get('title', 'B')}"
    return render("compare_live.html", title, info={**info, "debounce_ms": DEBOUNCE_MS})
