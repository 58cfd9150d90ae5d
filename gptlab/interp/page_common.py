"""The head pages' web code (gptlab/interp/web/*.html, *.css, *.js) made into one self-contained page at write time.

heads.html, live.html (the live viewer), compare.html and compare_live.html (the two comparison pages) are plain
HTML files in gptlab/interp/web that link their style sheets (``<link rel="stylesheet" href="x.css">``) and
scripts (``<script src="x.js"></script>``) from the same folder; common.css and common.js hold what every page
shares (pattern decoding and drawing, token display, colour scales, the live pages' requests),
compare_common.css/.js and the fragment compare_pair.html what the two comparison pages share. :func:`render`
puts the text of every ``{{include:x.html}}`` fragment in its place, replaces every link with the file's text
inline, ``{{title}}`` with the HTML-escaped title and ``{{json:NAME}}`` with the JSON of ``blocks[NAME]``, so the
page loads nothing from anywhere: it opens offline, from a file or from the live server.

Inside a ``<script>`` element the HTML parser ends the script at the first ``</script``, so the JSON is written
with every ``<`` as ``\\u003c`` (the same string to JSON.parse) and an inlined file that holds ``</script`` or
``</style`` is refused.
"""

from __future__ import annotations

import html
import json
import re
from functools import cache
from pathlib import Path

WEB = Path(__file__).with_name("web")

_LINK = re.compile(r'<link rel="stylesheet" href="([\w.-]+\.css)">')
_SCRIPT = re.compile(r'<script src="([\w.-]+\.js)"></script>')
_SLOT = re.compile(r"\{\{(title|json:\w+)\}\}")
_INCLUDE = re.compile(r"\{\{include:([\w.-]+\.html)\}\}")


@cache
def web_file(name: str) -> str:
    """The text of gptlab/interp/web/<name> (read once per process)."""
    return (WEB / name).read_text(encoding="utf-8")


def _inline(name: str, closing: str) -> str:
    text = web_file(name)
    if closing in text.lower():
        raise ValueError(
            f"gptlab/interp/web/{name} holds {closing!r}, which would end its inline element early"
        )
    return text


def json_for_script(obj) -> str:
    """``obj`` as compact JSON that can sit inside a ``<script>`` element (no ``<`` in it at all)."""
    blob = json.dumps(obj, separators=(",", ":"), allow_nan=False, default=float)
    return blob.replace("<", "\\u003c")


def render(template: str, title: str, **blocks) -> str:
    """The page gptlab/interp/web/<template> with its CSS and JS inlined, the title and the JSON ``blocks`` filled in."""
    page = _INCLUDE.sub(lambda m: web_file(m.group(1)).rstrip("\n"), web_file(template))
    if "{{include:" in page:
        raise ValueError(
            f"gptlab/interp/web/{template}: an {{{{include:...}}}} is left (a fragment includes another?)"
        )
    used = set()

    def fill(m: re.Match) -> str:
        slot = m.group(1)
        if slot == "title":
            return html.escape(str(title))
        name = slot.split(":", 1)[1]
        if name not in blocks:
            raise ValueError(f"gptlab/interp/web/{template} wants the JSON block {name!r}; pass {name}=...")
        used.add(name)
        return json_for_script(blocks[name])

    page = _SLOT.sub(fill, page)  # first: the inlined files are never searched for slots
    unused = set(blocks) - used
    if unused:
        raise ValueError(f"gptlab/interp/web/{template} has no slot for {', '.join(sorted(unused))}")
    page = _LINK.sub(lambda m: "<style>\n" + _inline(m.group(1), "</style") + "</style>", page)
    page = _SCRIPT.sub(lambda m: "<script>\n" + _inline(m.group(1), "</script") + "</script>", page)
    if "<link" in page or "<script src" in page:
        raise ValueError(
            f"gptlab/interp/web/{template} links a file that is not inlined (a css/js file in gptlab/interp/web)"
        )
    return page
