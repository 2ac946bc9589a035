"""spyglass.ui: the web dashboard's static files (no build step; see ui/VENDORED.md)."""

from __future__ import annotations

import os
from importlib import resources


def static_dir() -> str:
    """The folder to pass as `create_app(source, ui_dir=...)`; it holds index.html.

    Resolved through the package so that it works from a checkout (editable
    install) and from an installed wheel alike (`static/**/*` is package data).
    A strict editable install links each file from a build tree, and StaticFiles
    refuses links that leave its directory: the real folder is returned.
    """
    index = resources.files("spyglass.ui").joinpath("static", "index.html")
    return os.path.dirname(os.path.realpath(str(index)))
