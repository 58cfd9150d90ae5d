"""The live viewer's page: gptlab/interp/web/live.html made self-contained (inline CSS and JS; it talks only to its
server).

It opens with the model's sample text (``info["sample_text"]``: the start of the run's val text) already
analysed. The user types or pastes text; after a pause (``DEBOUNCE_MS``) the page POSTs it to ``/api/attention`` with
``"encoding": "b64"`` (each head's lower triangle as uint16, the heads.html encoding) and redraws: the tokens,
every layer's and head's pattern (thumbnails; click one to select it, tick "ablate" to zero-ablate it), the
selected head's pattern large, what the clicked token attends to and what attends to it, the per-head metrics
and logit attributions on this text, the top next-token predictions (with and without the ablations) and the
logit lens. Each update stores its timings in ``window.lastUpdate`` (input event -> drawn, request, render),
which bench/heads_bench.py reads; ``body[data-updated]`` counts the updates drawn.
"""

from __future__ import annotations

from .page_common import render

DEBOUNCE_MS = 100


def page(info: dict) -> str:
    """The page for a model described by ``LiveModel.info()``."""
    return render("live.html", str(info.get("title", "heads")), info={**info, "debounce_ms": DEBOUNCE_MS})
