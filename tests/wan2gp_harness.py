"""Wan2GP without Wan2GP (it needs torch): its plugin manager and the few wgp.py globals the plugin touches.

What is mimicked, from Wan2GP's source (shared/utils/plugins.py, wgp.py, shared/utils/download.py; see
/work/notes/helper-plugin.md):
- ``shared.utils.plugins.WAN2GPPlugin`` with the same attributes and methods (``setup_ui``, ``add_tab``,
  ``request_global``, ``request_component``, ``set_global`` through ``_set_wgp_global_func``, ``post_ui_setup``,
  ``on_tab_select``/``on_tab_deselect``, ``register_data_hook``, ``add_custom_js``, ``insert_after``), registered in
  ``sys.modules`` the way ``from shared.utils.plugins import WAN2GPPlugin`` finds it (no gradio import).
- Loading as ``PluginManager`` does: the plugins folder on ``sys.path``, every ``plugins/<dir>/`` with an
  ``__init__.py``, only ``enabled_plugins`` from wgp_config.json, ``import_module(f"{dir}.plugin")``, the first
  ``WAN2GPPlugin`` subclass by name instantiated with no argument, ``plugin_info.json`` metadata set as attributes,
  ``setup_ui()``, then ``inject_globals`` (``set_wgp_global`` and the requested globals), the tabs' constructors
  (only when asked: they need gradio), then ``post_ui_setup({requested components})``.
- wgp.py's globals as a dict: ``set_wgp_global`` refuses unknown names as wgp.py does, and the fake
  ``download_models`` looks ``download_file`` / ``process_files_def`` up in that dict at call time, as wgp.py's
  functions look up their module globals. The fake originals record each call (and whether the file was already
  there) and write the file, as Wan2GP would.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FakeWgp", "LoadedWan2GP", "WAN2GPPlugin", "load_wan2gp", "make_wgp_py"]

SYSTEM_PLUGINS: list[str] = []  # Wan2GP's own (configuration, about...): none in the fake tree


@dataclass
class PluginTab:
    id: str
    label: str
    component_constructor: Callable[..., Any]
    position: int = -1


class WAN2GPPlugin:
    """The base class, attribute for attribute as in shared/utils/plugins.py (without gradio)."""

    def __init__(self) -> None:
        self.tabs: dict[str, PluginTab] = {}
        self.name = self.__class__.__name__
        self.version = "1.0.0"
        self.description = "No description provided."
        self.uninstallable = True
        self._component_requests: list[str] = []
        self._global_requests: list[str] = []
        self._insert_after_requests: list[Any] = []
        self._setup_complete = False
        self._data_hooks: dict[str, list[Callable[..., Any]]] = {}
        self.tab_ids: list[str] = []
        self._set_wgp_global_func: Callable[[str, Any], Any] | None = None
        self._custom_js_snippets: list[str] = []

    def setup_ui(self) -> None:
        pass

    def add_tab(self, tab_id: str, label: str, component_constructor: Callable[..., Any], position: int = -1) -> None:
        self.tabs[tab_id] = PluginTab(tab_id, label, component_constructor, position)

    def post_ui_setup(self, components: dict[str, Any]) -> dict[Any, Any]:
        return {}

    def on_tab_select(self, state: dict[str, Any]) -> None:
        pass

    def on_tab_deselect(self, state: dict[str, Any]) -> None:
        pass

    def request_component(self, component_id: str) -> None:
        if component_id not in self._component_requests:
            self._component_requests.append(component_id)

    def request_global(self, global_name: str) -> None:
        if global_name not in self._global_requests:
            self._global_requests.append(global_name)

    def set_global(self, variable_name: str, new_value: Any) -> Any:
        if self._set_wgp_global_func:
            return self._set_wgp_global_func(variable_name, new_value)
        return None

    @property
    def component_requests(self) -> list[str]:
        return self._component_requests.copy()

    @property
    def global_requests(self) -> list[str]:
        return self._global_requests.copy()

    def register_data_hook(self, hook_name: str, callback: Callable[..., Any]) -> None:
        self._data_hooks.setdefault(hook_name, []).append(callback)

    def add_custom_js(self, js_code: str) -> None:
        if isinstance(js_code, str) and js_code.strip():
            self._custom_js_snippets.append(js_code)

    @property
    def custom_js_snippets(self) -> list[str]:
        return self._custom_js_snippets.copy()

    def insert_after(self, target_component_id: str, new_component_constructor: Callable[..., Any]) -> None:
        self._insert_after_requests.append((target_component_id, new_component_constructor))


@dataclass
class Call:
    """One call of a fake original: its arguments, and whether the file(s) were already there."""

    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    present: bool


@dataclass
class FakeWgp:
    """wgp.py's module globals, as a dict, with fake download functions that behave like Wan2GP's."""

    root: Path
    server_config: dict[str, Any]
    calls: list[Call] = field(default_factory=list)
    globals: dict[str, Any] = field(default_factory=dict)
    content: bytes = b"downloaded by Wan2GP itself"

    def __post_init__(self) -> None:
        self.globals.update(
            server_config=self.server_config,
            server_config_filename=str(self.root / "wgp_config.json"),
            set_wgp_global=self.set_wgp_global,
            download_file=self.download_file,
            process_files_def=self.process_files_def,
            download_models=self.download_models,
        )

    def set_wgp_global(self, variable_name: str, new_value: Any) -> str | None:
        if variable_name not in self.globals:
            return f"Error: Global variable '{variable_name}' does not exist."
        self.globals[variable_name] = new_value
        return None

    def _write(self, path: str) -> None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(self.content)

    # wgp.py: download_file(url, filename, gen=None, show_filename=True): fetches, never looks first.
    def download_file(self, url: str, filename: str, gen: Any = None, show_filename: bool = True) -> None:
        self.calls.append(Call("download_file", (url, filename), {"gen": gen}, os.path.isfile(filename)))
        self._write(filename)

    # wgp.py: process_files_def(...): looks in the checkpoints paths first, fetches what is missing.
    def process_files_def(
        self,
        repoId: str | None = None,
        sourceFolderList: list[str] | None = None,
        fileList: list[list[str]] | None = None,
        targetFolderList: list[str | None] | None = None,
        gen: Any = None,
        show_filename: bool = True,
    ) -> None:
        sources = sourceFolderList or []
        targets = targetFolderList or [None] * len(sources)
        relatives = [
            os.path.join(*(p for p in (target, source, name) if p))
            for target, source, names in zip(targets, sources, fileList or [], strict=False)
            for name in names
        ]
        located = [any(os.path.isfile(os.path.join(r, rel)) for r in self.checkpoints()) for rel in relatives]
        self.calls.append(Call("process_files_def", (repoId, sources, fileList), {"gen": gen}, all(located)))
        for relative, there in zip(relatives, located, strict=True):
            if not there:
                self._write(os.path.join(self.checkpoints()[0], relative))

    # wgp.py: download_models(model_filename, model_type, ...): looks, then calls the download_file of the moment.
    def download_models(
        self,
        model_filename: str | None = None,
        model_type: str | None = None,
        file_type: int = 0,
        submodel_no: int = 1,
        force_path: str | None = None,
        model_def: dict[str, Any] | None = None,
        gen: Any = None,
        show_filename: bool = True,
    ) -> None:
        self.calls.append(Call("download_models", (model_filename, model_type), {"gen": gen}, False))
        if not model_filename:
            return
        local = os.path.join(self.checkpoints()[0], os.path.basename(model_filename.split("|")[0]))
        if not any(os.path.isfile(os.path.join(r, os.path.basename(local))) for r in self.checkpoints()):
            self.globals["download_file"](model_filename, local, gen=gen, show_filename=show_filename)

    def checkpoints(self) -> list[str]:
        return self.server_config.get("checkpoints_paths") or ["ckpts", "."]

    def calls_of(self, name: str) -> list[Call]:
        return [call for call in self.calls if call.name == name]


@dataclass
class LoadedWan2GP:
    plugins: dict[str, Any]
    wgp: FakeWgp
    printed: list[str] = field(default_factory=list)

    def plugin(self, plugin_id: str = "wan2gp-wangpd") -> Any:
        return self.plugins[plugin_id]

    def select_model(self, model_type: str, state: dict[str, Any] | None = None) -> dict[str, Any]:
        """The UI's model switch: ``state["model_type"]`` is set first, then each plugin's on_model_change."""
        state = state if state is not None else {}
        state["model_type"] = model_type
        for plugin in self.plugins.values():
            if hasattr(plugin, "on_model_change"):
                plugin.on_model_change(state, model_type)
        return state


def make_wgp_py(root: Path) -> None:
    """The file that says "this folder is Wan2GP's" (install-plugin looks for it)."""
    (root / "wgp.py").write_text("# Wan2GP stand-in for the tests (the real one needs torch)\n")


def _install_fake_shared() -> dict[str, types.ModuleType | None]:
    saved = {name: sys.modules.get(name) for name in ("shared", "shared.utils", "shared.utils.plugins")}
    shared = types.ModuleType("shared")
    shared.__path__ = []  # a package: `from shared.utils import files_locator` fails with ImportError, as intended
    utils = types.ModuleType("shared.utils")
    utils.__path__ = []
    plugins = types.ModuleType("shared.utils.plugins")
    plugins.WAN2GPPlugin = WAN2GPPlugin  # type: ignore[attr-defined]
    plugins.SYSTEM_PLUGINS = SYSTEM_PLUGINS  # type: ignore[attr-defined]
    shared.utils = utils  # type: ignore[attr-defined]
    utils.plugins = plugins  # type: ignore[attr-defined]
    sys.modules.update({"shared": shared, "shared.utils": utils, "shared.utils.plugins": plugins})
    return saved


@contextmanager
def load_wan2gp(
    root: Path, build_tabs: Callable[[list[tuple[Any, PluginTab]]], None] | None = None
) -> Iterator[LoadedWan2GP]:
    """Start a fake Wan2GP in ``root`` (the cwd becomes ``root``, as Wan2GP runs from its folder) and load its
    enabled plugins; undone on exit (cwd, sys.path, sys.modules). ``build_tabs``: builds the UI (it needs gradio)
    from the plugins' tabs, each constructor called inside ``with gr.Tab(label)`` as Wan2GP does; without it no
    tab is built."""
    old_cwd = os.getcwd()
    plugins_dir = str(root / "plugins")
    saved = _install_fake_shared()
    os.chdir(root)
    sys.path.insert(0, plugins_dir)
    loaded_names: list[str] = []
    try:
        server_config = json.loads((root / "wgp_config.json").read_text(encoding="utf-8"))
        wgp = FakeWgp(root, server_config)
        enabled = SYSTEM_PLUGINS + [p for p in server_config.get("enabled_plugins", []) if p not in SYSTEM_PLUGINS]
        discovered = sorted(
            item for item in os.listdir(plugins_dir) if (Path(plugins_dir) / item / "__init__.py").exists()
        )
        plugins: dict[str, Any] = {}
        for dir_name in discovered:
            if dir_name not in enabled:
                continue
            for name in [n for n in sys.modules if n == dir_name or n.startswith(dir_name + ".")]:
                del sys.modules[name]  # a fresh import from this tree, not one cached from another test's
            module = importlib.import_module(f"{dir_name}.plugin")
            loaded_names.append(dir_name)
            info_path = Path(plugins_dir) / dir_name / "plugin_info.json"
            metadata = json.loads(info_path.read_text(encoding="utf-8")) if info_path.exists() else {}
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if issubclass(obj, WAN2GPPlugin) and obj != WAN2GPPlugin:
                    plugin = obj()
                    for key in ("name", "version", "description", "author", "date", "wan2gp_version"):
                        if key in metadata:
                            setattr(plugin, key, metadata[key])
                    plugin.setup_ui()
                    plugins[dir_name] = plugin
                    break
        for plugin in plugins.values():  # inject_globals
            plugin._set_wgp_global_func = wgp.globals["set_wgp_global"]
            for name in plugin.global_requests:
                if name in wgp.globals:
                    setattr(plugin, name, wgp.globals[name])
        if build_tabs is not None:
            build_tabs([(plugin, tab) for plugin in plugins.values() for tab in plugin.tabs.values()])
        for plugin in plugins.values():
            plugin.post_ui_setup({})
        yield LoadedWan2GP(plugins, wgp)
    finally:
        os.chdir(old_cwd)
        if plugins_dir in sys.path:
            sys.path.remove(plugins_dir)
        for dir_name in loaded_names:
            for name in [n for n in sys.modules if n == dir_name or n.startswith(dir_name + ".")]:
                del sys.modules[name]
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
