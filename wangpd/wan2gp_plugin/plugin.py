"""wangpd inside Wan2GP: a "Model downloads" tab, prefetch on model choice, and Wan2GP waiting for wangpd instead
of downloading a file a second time.

Wan2GP's plugin manager (``shared/utils/plugins.py``) imports this module as ``<plugin folder>.plugin``, makes the
one ``WAN2GPPlugin`` subclass defined here with no arguments, calls ``setup_ui()``, injects the requested wgp.py
globals as attributes, builds the tab, then calls ``post_ui_setup(components)``; it calls ``on_model_change(state,
model_type)`` when the user picks a model. An exception in any of these must not reach Wan2GP, so each catches its
own and says so in one line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from shared.utils.plugins import WAN2GPPlugin  # type: ignore[import-not-found]  # Wan2GP's, as its plugins import it

from .client import Client
from .fetch import Fetcher
from .prefetch import Prefetcher
from .settings import load_settings

__all__ = ["PLUGIN_ID", "WangpdPlugin"]

PLUGIN_ID = "wan2gp-wangpd"
TAB_ID = "wangpd_model_downloads"
TAB_LABEL = "Model downloads"  # Wan2GP keys tabs by label; its bundled downloads plugin has "Downloads"
WRAPPED = ("download_models", "download_file", "process_files_def")


def log(message: str) -> None:
    print(f"[wangpd] {message}", flush=True)


class WangpdPlugin(WAN2GPPlugin):
    def __init__(self) -> None:
        super().__init__()
        self.name = "wangpd"
        self.version = "0.1.0"
        self.description = "Model downloads by wangpd"
        self.folder = Path(__file__).resolve().parent
        self.settings, problems = load_settings(self.folder)
        for problem in problems:
            log(problem)
        self.client = Client(self.settings.socket, timeout=self.settings.call_timeout)
        # Wan2GP runs from its own folder: its relative paths (ckpts/...) and its plugins/ are relative to the cwd.
        self.root = os.getcwd()
        self.fetcher = Fetcher(self.client, self.settings, self.root, log, self._checkpoints)
        self.prefetcher = Prefetcher(self.client, self.settings.prefetch_delay, log)
        self.originals: dict[str, Any] = {}

    def setup_ui(self) -> None:
        for name in (*WRAPPED, "server_config"):
            self.request_global(name)
        self.add_tab(tab_id=TAB_ID, label=TAB_LABEL, component_constructor=self.create_tab)

    def create_tab(self, *_: Any) -> None:
        """The tab's content (newer Wan2GP passes an API session: not needed here)."""
        try:
            from .tab import build_tab

            build_tab(self.client, self.settings, self.root)
        except Exception as exc:
            log(f"the {TAB_LABEL} tab could not be built ({exc!r}); wangpctl still works")

    def post_ui_setup(self, components: dict[str, Any]) -> dict[str, Any]:
        try:
            self.install_wrappers()
        except Exception as exc:
            log(f"could not hook Wan2GP's downloads ({exc!r}); Wan2GP downloads as usual")
        return {}

    def install_wrappers(self) -> list[str]:
        """Replace wgp.py's download functions by wrappers that wait for wangpd first; returns the names replaced."""
        if not self.settings.wait:
            return []
        if getattr(self, "_set_wgp_global_func", None) is None:
            log("Wan2GP gave the plugin no set_wgp_global: its downloads are not hooked")
            return []
        wraps = {
            "download_models": self.fetcher.wrap_download_models,
            "download_file": self.fetcher.wrap_download_file,
            "process_files_def": self.fetcher.wrap_process_files_def,
        }
        for name, wrap in wraps.items():
            original = getattr(self, name, None)
            if not callable(original) or getattr(original, "__wangpd_wrapped__", False):
                continue
            wrapped = wrap(original)
            error = self.set_global(name, wrapped)
            if error:  # wgp.py's set_wgp_global returns a message when it refuses
                log(f"could not hook {name}: {error}")
                continue
            setattr(self, name, wrapped)
            self.originals[name] = original
        if self.originals:
            log(f"Wan2GP waits for wangpd before downloading a file ({', '.join(self.originals)} hooked)")
        return list(self.originals)

    def on_model_change(self, state: Any, model_type: Any) -> None:
        """The user picked ``model_type``: queue it at the top of wangpd's queue, off the UI's thread."""
        try:
            if self.settings.prefetch and isinstance(model_type, str) and model_type:
                self.prefetcher.request(model_type)
        except Exception as exc:
            log(f"could not ask wangpd for {model_type}: {exc!r}")

    def _checkpoints(self) -> list[str]:
        """Wan2GP's ``checkpoints_paths`` (where it looks for model files), from its live config."""
        config = getattr(self, "server_config", None)
        paths = config.get("checkpoints_paths") if isinstance(config, dict) else None
        if isinstance(paths, list) and paths and all(isinstance(p, str) for p in paths):
            return paths
        return ["ckpts", "."]
