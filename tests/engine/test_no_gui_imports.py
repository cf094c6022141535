"""The engine (and the CTC, synthetic and CLI modules) never import Qt, napari or magicgui."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import napari_embedtrack.engine as engine

GUI_PREFIXES = ("qtpy", "napari", "magicgui")  # plus PyQt*, PySide*


def test_engine_imports_no_gui():
    modules = [f"napari_embedtrack.engine.{m.name}" for m in pkgutil.iter_modules(engine.__path__)]
    assert {"napari_embedtrack.engine.model", "napari_embedtrack.engine.train"} <= set(modules)
    modules += [
        "napari_embedtrack.engine",
        "napari_embedtrack.io.ctc",
        "napari_embedtrack.io.tracks",
        "napari_embedtrack.synthetic",
        "napari_embedtrack.cli",
    ]
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    tops = {m.split(".")[0] for m in loaded}
    assert "napari_embedtrack" in tops and "torch" in tops
    gui = sorted(t for t in tops if t in GUI_PREFIXES or t.startswith(("PyQt", "PySide")))
    assert gui == [], f"GUI modules imported by the engine: {gui[:10]}"
