"""What remote users read of the app's errors: no absolute path of the server.

The zoo's messages name files in full (right for someone at the server's console: `zoo.load_pretrained`,
`python -m train`), but the app shows them to whoever opens the page or calls /compare. Every message
that leaves the app (gr.Error texts, unavailable models' reasons, the records' errors and notes) goes
through `public_message`: a path inside the weights folder keeps its run folder and what follows
(``<weights>/run-a/config.json`` -> ``run-a/config.json``), any other absolute path only its last part
(``/home/me/.cache/.../config.json`` -> ``…/config.json``).
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

from .comparison import Comparison

__all__ = ["public_message", "public_comparison"]

# an absolute POSIX path: a "/" that starts a word (not one inside a URL, a fraction or a relative path),
# then everything up to a space, a quote or a bracket
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~\\-])/[^\s'\"`()<>\[\]{},;|*]+")


def _shorten(match: re.Match) -> str:
    path = match.group(0)
    tail = path[len(path.rstrip(".:")):]  # a sentence's full stop or a colon after the path stays outside it
    name = Path(path[:len(path) - len(tail)]).name
    return f"…/{name}{tail}" if name else f"…{tail}"


def public_message(text: str | None, weights: str | os.PathLike | None = None) -> str | None:
    """`text` with the server's absolute paths shortened (see the module's docstring); None stays None."""
    if not text:
        return text
    if weights is not None:
        roots = {str(Path(weights)), str(Path(weights).resolve())}
        for root in sorted((r.rstrip("/") for r in roots if os.path.isabs(r)), key=len, reverse=True):
            # the folder itself, or a path inside it; not a longer name that starts the same ("weights2")
            text = re.sub(re.escape(root) + r"(?:/|(?![\w.-]))",
                          lambda m: "" if m.group(0).endswith("/") else "the weights folder", text)
    return _ABSOLUTE_PATH.sub(_shorten, text)


def _public_value(value: Any, weights: str | os.PathLike | None) -> Any:
    if isinstance(value, str):
        return public_message(value, weights)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [public_message(v, weights) for v in value]
    return value


def public_comparison(comparison: Comparison, weights: str | os.PathLike | None) -> Comparison:
    """The comparison with every text of its results and its summary through `public_message` (in place)."""
    for result in comparison.results:
        for f in dataclasses.fields(result):
            setattr(result, f.name, _public_value(getattr(result, f.name), weights))
    comparison.summary.markdown = public_message(comparison.summary.markdown, weights)
    return comparison
