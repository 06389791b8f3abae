"""Config loading: good files parse, every bad one fails with one line naming file, key and line; exit 78."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, get_type_hints

import pytest

from wangpd.config import _CONVERTERS, Config, load_config
from wangpd.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

# Config field -> its section dataclass, read from Config itself so that a new section is covered too.
SECTIONS: dict[str, Any] = {
    name: kind for name, kind in get_type_hints(Config).items() if dataclasses.is_dataclass(kind)
}
# Fields set at the top level: the seed's config.yaml had them there, and `libraries` is a plain list.
SEED_KEYS = {
    ("wan2gp", "directory"): "wan2gp_directory",
    ("invokeai", "db"): "invokeai_db",
    ("invokeai", "models_dir"): "invokeai_models_dir",
    ("libraries", "folders"): "libraries",
}


@pytest.fixture
def base(tmp_path: Path) -> Path:
    (tmp_path / "wan2gp").mkdir()
    return tmp_path


def write(base: Path, text: str) -> Path:
    path = base / "config.yaml"
    path.write_text(text)
    return path


def test_shipped_config_loads_and_points_at_the_sample_wan2gp() -> None:
    config = load_config(ROOT / "config.yaml", environ={"HOME": "/home/x"})
    assert config.wan2gp.directory == ROOT / "sample" / "wan2gp"
    assert config.auto_queue.require_approval is True
    assert config.download.bandwidth == 0
    assert config.hub.cache_dir == Path("/home/x/.cache/huggingface/hub")


def test_seed_keys_still_work(base: Path) -> None:
    path = write(
        base,
        "wan2gp_directory: wan2gp\nbandwidth_limit_kb: 5000\ninvokeai_db: /opt/invoke/databases/invokeai.db\n",
    )
    config = load_config(path, environ={"HOME": "/h"})
    assert config.download.bandwidth == 5_000_000
    assert config.invokeai.db == Path("/opt/invoke/databases/invokeai.db")
    assert config.invokeai.models_dir == Path("/opt/invoke/models")
    assert config.wan2gp.directory == base / "wan2gp"


@pytest.mark.parametrize(
    ("rate", "expected"),
    [("90MB/s", 90_000_000), ("50MiB/s", 50 * 1024 * 1024), ("400Mbit/s", 50_000_000), ("0", 0), ("off", 0)],
)
def test_bandwidth_units(base: Path, rate: str, expected: int) -> None:
    path = write(base, f"wan2gp_directory: wan2gp\ndownload:\n  bandwidth: {rate}\n")
    assert load_config(path, environ={"HOME": "/h"}).download.bandwidth == expected


def test_systemd_directories_are_the_defaults(base: Path) -> None:
    path = write(base, "wan2gp_directory: wan2gp\n")
    env = {
        "HOME": "/h",
        "STATE_DIRECTORY": "/var/lib/wangpd",
        "RUNTIME_DIRECTORY": "/run/wangpd",
        "CACHE_DIRECTORY": "/var/cache/wangpd",
    }
    config = load_config(path, environ=env)
    assert config.daemon.db_path == Path("/var/lib/wangpd/hfcache.db")
    assert config.daemon.socket == Path("/run/wangpd/wangpd.sock")
    assert config.hub.cache_dir == Path("/var/cache/wangpd/huggingface/hub")


def test_xdg_defaults_and_hf_env(base: Path) -> None:
    path = write(base, "wan2gp_directory: wan2gp\n")
    env = {
        "HOME": "/h",
        "XDG_RUNTIME_DIR": "/run/user/1000",
        "HF_HUB_CACHE": "/data/hub",
        "HF_ENDPOINT": "http://127.0.0.1:8000/",
    }
    config = load_config(path, environ=env)
    assert config.daemon.socket == Path("/run/user/1000/wangpd/wangpd.sock")
    assert config.daemon.db_path == Path("/h/.local/state/wangpd/hfcache.db")
    assert config.hub.cache_dir == Path("/data/hub")
    assert config.hub.endpoint == "http://127.0.0.1:8000"


def test_schedule_parses(base: Path) -> None:
    path = write(
        base,
        "wan2gp_directory: wan2gp\ndownload:\n  schedule:\n"
        "    - {days: mon-fri, from: '08:00', to: '19:00', limit: 10MB/s}\n"
        "    - {days: 'sat,sun', from: '22:00', to: '06:00', limit: 0}\n",
    )
    windows = load_config(path, environ={"HOME": "/h"}).download.schedule
    assert windows[0].days == (0, 1, 2, 3, 4) and windows[0].limit == 10_000_000
    assert windows[0].start_minute == 480 and windows[0].end_minute == 1140
    assert windows[1].days == (5, 6) and windows[1].start_minute == 1320 and windows[1].end_minute == 360


def test_a_file_with_no_settings_gives_the_dataclass_defaults(base: Path) -> None:
    # wan2gp_directory is required, so the file has that one key and nothing else.
    config = load_config(write(base, "wan2gp_directory: wan2gp\n"), environ={"HOME": "/h"})
    # The one field with a dataclass default that the loader takes from the environment instead.
    from_environment = {("hub", "cache_dir"): Path("/h/.cache/huggingface/hub")}
    for name, kind in SECTIONS.items():
        for item in dataclasses.fields(kind):
            if item.default is not dataclasses.MISSING:
                default = item.default
            elif item.default_factory is not dataclasses.MISSING:
                default = item.default_factory()
            else:
                continue  # no default: required, or computed from the environment (tested above)
            expected = from_environment.get((name, item.name), default)
            assert getattr(getattr(config, name), item.name) == expected, f"{name}.{item.name}"


def test_every_field_of_every_section_is_reachable_from_yaml(base: Path) -> None:
    assert set(SECTIONS) == set(_CONVERTERS)
    for name, kind in SECTIONS.items():
        # A field without a converter could never be set from the file.
        assert set(_CONVERTERS[name]) == {item.name for item in dataclasses.fields(kind)}, name
        for item in dataclasses.fields(kind):
            # A mapping is a wrong value for every setting: the error must name the key, not call it unknown.
            key = SEED_KEYS.get((name, item.name), f"{name}.{item.name}")
            setting = f"{key}: {{not: valid}}\n" if "." not in key else f"{name}:\n  {item.name}: {{not: valid}}\n"
            text = setting if key == "wan2gp_directory" else "wan2gp_directory: wan2gp\n" + setting
            with pytest.raises(ConfigError) as caught:
                load_config(write(base, text), environ={"HOME": "/h"})
            assert f": {key}: " in str(caught.value) and "unknown key" not in str(caught.value), str(caught.value)


# (config text, substrings the one-line message must contain). {wan} = a valid wan2gp_directory line.
BAD_CONFIGS = [
    ("wan2gp_directory: nowhere\n", ["wan2gp_directory", "does not exist"]),
    ("bandwidth_limit_kb: 5\n", ["wan2gp_directory", "required"]),
    ("{wan}\nbandwith_limit_kb: 5\n", ["bandwith_limit_kb", "unknown key", ":2:"]),
    ("{wan}\ndownload:\n  bandwidth: 90MBs\n", ["download.bandwidth", "bad rate", ":3:"]),
    ("{wan}\ndownload:\n  bandwidth: fast\n", ["download.bandwidth", "bad rate"]),
    ("{wan}\ndownload:\n  concurrency: two\n", ["download.concurrency", "whole number"]),
    ("{wan}\ndownload:\n  concurrency: 0\n", ["download.concurrency", "between 1 and 32"]),
    ("{wan}\ndownload:\n  link_mode: junction\n", ["download.link_mode", "symlink, hardlink, copy"]),
    ("{wan}\ndownload:\n  free_space_reserve: lots\n", ["download.free_space_reserve", "bad size"]),
    ("{wan}\ndownload:\n  turbo: true\n", ["download.turbo", "unknown key"]),
    ("{wan}\ndownload: 5\n", ["download", "expected a mapping"]),
    ("{wan}\nwatch:\n  enabled: yes please\n", ["watch.enabled", "true or false"]),
    ("{wan}\nwatch:\n  reconcile_interval: soon\n", ["watch.reconcile_interval", "bad duration"]),
    ("{wan}\nauto_queue:\n  track: some\n", ["auto_queue.track", "installed, all, none"]),
    ("{wan}\nauto_queue:\n  max_auto_bytes: -5\n", ["auto_queue.max_auto_bytes", "negative"]),
    ("{wan}\nauto_queue:\n  include: 5\n", ["auto_queue.include", "list of strings"]),
    ("{wan}\nhub:\n  endpoint: ftp://mirror\n", ["hub.endpoint", "http(s) URL"]),
    ("{wan}\nhub:\n  token_file: /nonexistent/token\n", ["hub.token_file", "does not exist"]),
    ("{wan}\ndaemon:\n  log_level: loud\n", ["daemon.log_level", "debug, info"]),
    ("{wan}\ndaemon:\n  socket_group: no-such-group-xyz\n", ["daemon.socket_group", "no such group"]),
    ("{wan}\nbandwidth_limit_kb: 10\ndownload:\n  bandwidth: 5MB/s\n", ["bandwidth_limit_kb", "not both"]),
    ("{wan}\nbandwidth_limit_kb: ten\n", ["bandwidth_limit_kb", "whole number"]),
    ("{wan}\ndownload:\n  schedule:\n    - {{days: funday, limit: 1MB/s}}\n", ["download.schedule", "funday"]),
    ("{wan}\ndownload:\n  schedule:\n    - {{from: '25:00', limit: 1MB/s}}\n", ["download.schedule", "bad time"]),
    ("{wan}\ndownload:\n  schedule:\n    - {{days: mon}}\n", ["download.schedule", "'limit' is required"]),
    (
        "{wan}\ndownload:\n  schedule:\n    - {{from: '08:00', to: '08:00', limit: 1MB/s}}\n",
        ["download.schedule", "entry 0", "both 08:00", "empty"],
    ),
    ("{wan}\nwan2gp:\n  variants: some\n", ["wan2gp.variants", "wan2gp, all"]),
    ("{wan}\nwan2gp:\n  handler_files: [missing.yaml]\n", ["wan2gp.handler_files", "does not exist"]),
    ("{wan}\n  bad indent: [\n", ["invalid YAML"]),
    ("- just\n- a list\n", ["expected a mapping"]),
    ("{wan}\nauto_queue:\n  include: [2020-13-45]\n", ["invalid YAML value", "month must be in 1..12"]),
    # Issue 15, item 25: a key given twice used to pass (YAML keeps the last); an unset $VAR stayed literal.
    ("{wan}\ndownload:\n  bandwidth: 1MB/s\n  bandwidth: 9MB/s\n", ["download.bandwidth", "given twice", ":4:"]),
    ("{wan}\ndaemon:\n  state_dir: $WANGPD_UNSET_VAR/state\n", ["daemon.state_dir", "WANGPD_UNSET_VAR is not set"]),
]


@pytest.mark.parametrize(("text", "expected"), BAD_CONFIGS, ids=[f"bad{i}" for i in range(len(BAD_CONFIGS))])
def test_bad_config_names_file_key_and_problem(base: Path, text: str, expected: list[str]) -> None:
    path = write(base, text.format(wan="wan2gp_directory: wan2gp"))
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={"HOME": "/h"})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_a_bad_hf_endpoint_in_the_environment_is_a_config_error(base: Path) -> None:
    path = write(base, "wan2gp_directory: wan2gp\n")
    with pytest.raises(ConfigError, match="HF_ENDPOINT: expected an http"):
        load_config(path, environ={"HOME": "/h", "HF_ENDPOINT": "mirror.local"})


def test_a_wan2gp_directory_that_is_a_file_or_a_loop_says_so(base: Path) -> None:
    (base / "a-file").write_text("x")
    (base / "loop").symlink_to(base / "loop")
    for target, words in (("a-file", "is a file, not a folder"), ("loop", "is a symlink loop")):
        with pytest.raises(ConfigError, match=words):
            load_config(write(base, f"wan2gp_directory: {target}\n"), environ={"HOME": "/h"})


def test_check_config_masks_endpoint_credentials_and_checks_handler_tables(base: Path) -> None:
    good = write(base, "wan2gp_directory: wan2gp\nhub:\n  endpoint: https://me:s3cret@mirror.example\n")
    shown = subprocess.run(
        [sys.executable, "-m", "wangpd", "check-config", "--config", str(good)], capture_output=True, text=True
    )
    assert shown.returncode == 0 and "s3cret" not in shown.stdout and "https://***@mirror.example" in shown.stdout
    (base / "bad-table.yaml").write_text("architectures:\n  x:\n    colour: red\n")
    bad = write(base, "wan2gp_directory: wan2gp\nwan2gp:\n  handler_files: [bad-table.yaml]\n")
    refused = subprocess.run(
        [sys.executable, "-m", "wangpd", "check-config", "--config", str(bad)], capture_output=True, text=True
    )
    assert refused.returncode == 78 and "bad-table.yaml" in refused.stderr and "colour" in refused.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")


@pytest.mark.parametrize("command", [["check-config"], ["run"]])
def test_bad_config_exits_78_with_one_line(base: Path, command: list[str]) -> None:
    path = write(base, "wan2gp_directory: wan2gp\ndownload:\n  bandwidth: 90MBs\n")
    result = subprocess.run(
        [sys.executable, "-m", "wangpd", *command, "--config", str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 78
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{path}:3: download.bandwidth: bad rate '90MBs'" in lines[0]


def test_check_config_ok(base: Path) -> None:
    path = write(base, "wan2gp_directory: wan2gp\n")
    result = subprocess.run(
        [sys.executable, "-m", "wangpd", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert f"{path.resolve()}: OK" in result.stdout


def test_a_yaml_alias_bomb_is_refused_at_once_with_one_short_line(base: Path) -> None:
    # 9 levels of 9 aliases: 387 million values once expanded (check-config took 90 s and 13.7 GB, printing a
    # 2.8 GB line). Refused by counting, never expanded; a config using a few aliases still loads.
    lines = ["wan2gp_directory: wan2gp", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join(['*' + previous] * 9)}]")
    path = write(base, "\n".join(lines) + "\n")
    start = time.monotonic()
    with pytest.raises(ConfigError, match="alias bomb") as caught:
        load_config(path, environ={"HOME": "/h"})
    assert time.monotonic() - start < 5 and len(str(caught.value)) < 300
    friendly = write(base, "wan2gp_directory: wan2gp\nauto_queue:\n  include: &mine [t2v]\n  exclude: []\n")
    assert load_config(friendly, environ={"HOME": "/h"}).auto_queue.include == ("t2v",)


def test_a_long_bad_value_gives_a_short_message(base: Path) -> None:
    path = write(base, "wan2gp_directory: wan2gp\ndownload:\n  bandwidth: " + "x" * 100_000 + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={"HOME": "/h"})
    assert len(str(caught.value)) <= ConfigError.MAX_LENGTH and "download.bandwidth" in str(caught.value)


def test_the_shipped_config_shows_every_key_with_a_comment() -> None:
    """Every key the loader accepts is in config.yaml (set, or commented out), with a comment line above it."""
    from wangpd.config import _known_keys

    lines = (ROOT / "config.yaml").read_text(encoding="utf-8").splitlines()

    def documented(name: str, indent: bool) -> bool:
        lead = r"\s+" if indent else ""
        pattern = re.compile(lead + r"#?\s*" + re.escape(name) + ":")
        for index, line in enumerate(lines):
            if pattern.match(line) and index > 0 and lines[index - 1].lstrip().startswith("#"):
                return True
        return False

    missing = []
    for key, subs in _known_keys().items():
        if not subs and not documented(key, False):
            missing.append(key)
        missing += [f"{key}.{sub}" for sub in sorted(subs or ()) if not documented(sub, True)]
    assert missing == []
