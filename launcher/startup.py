"""What keeps `llmlaunch` quick to start; launcher.cli runs it before importing anything else.

pydantic finds its plugins through every installed distribution's entry points (~40 ms beside torch's
stack). llmlaunch uses none, so the CLI turns them off the way pydantic documents
(PYDANTIC_DISABLE_PLUGINS; a value the user set wins). Even so pydantic imports its plugin loader, and
with it importlib.metadata and email (~15 ms of a 0.2 s `render`), at the first model; where the
variable turns every plugin off, the CLI registers a loader that gives pydantic's answer at once: none.
"""

from __future__ import annotations

import importlib
import os
import sys
import types

PLUGIN_LOADER = "pydantic.plugin._loader"
ALL_PLUGINS_OFF = ("__all__", "1", "true")  # the values for which pydantic's loader returns no plugins


def skip_pydantic_plugins() -> None:
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    if os.environ["PYDANTIC_DISABLE_PLUGINS"] not in ALL_PLUGINS_OFF or PLUGIN_LOADER in sys.modules:
        return
    loader = types.ModuleType(PLUGIN_LOADER, "Stands in for pydantic's plugin loader: plugins are off.")
    loader.get_plugins = lambda: ()
    loader.__getattr__ = _from_the_real_loader
    sys.modules[PLUGIN_LOADER] = loader


def _from_the_real_loader(name: str):
    """Anything else a pydantic version asks of its loader comes from the real one, loaded then."""
    if name.startswith("__"):  # the import system probing (__path__, ...): a plain module has none
        raise AttributeError(name)
    if getattr(sys.modules.get(PLUGIN_LOADER), "__file__", None) is None:  # still the stand-in
        sys.modules.pop(PLUGIN_LOADER, None)
    return getattr(importlib.import_module(PLUGIN_LOADER), name)
