"""An upload's name as Gradio's own file widget shows it: escaped like the app's messages, never as is.

Gradio's upload route keeps bidirectional controls in a file's name (its sanitiser removes only path separators, ASCII
control characters and shell characters), and gr.File shows the name it serves the file under: an upload named
"report\u202egnp.exe" reads "reportpng.exe" in the widget and in its download link. Gradio offers no display name
separate from the file's own (gr.File.postprocess takes it from the path), so the app serves the upload, in the same
cache folder, under its printable name (zoo.images.printable_name: "report\\u202egnp.exe") and sets that as the
widget's value. The new name is a hard link (a copy where links are refused) that Gradio tracks like any file it
serves: deleted with the upload by its lifetime and at shutdown.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from zoo.images import printable_name

__all__ = ["displayable_upload"]


def displayable_upload(path: str | None) -> str | None:
    """`path` when its file name shows as the characters it holds; else the same file under its printable name
    beside it (`path` itself where that cannot be written: the app's own messages escape the name anyway)."""
    if not path:
        return path
    original = Path(path)
    shown = printable_name(original.name)
    if shown == original.name:
        return path
    target = original.with_name(shown)
    try:
        os.link(original, target)
    except FileExistsError:  # the same upload again: Gradio's folder is named by the file's content
        pass
    except OSError:
        try:
            shutil.copyfile(original, target)
        except OSError:
            return path
    return str(target)
