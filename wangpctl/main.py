"""Console entry point of ``wangpctl``.

``wangpctl status`` is what people (and scripts, and shell prompts) run most, so it takes a fast path that needs
only the standard library: click and the rest of the CLI are imported only for other commands.
"""

from __future__ import annotations

import sys


def _fast_status(argv: list[str]) -> bool:
    """Handle ``status [--json] [--socket PATH]`` without click. False = not this simple form."""
    socket_path = None
    as_json = False
    seen_status = False
    rest = list(argv)
    while rest:
        arg = rest.pop(0)
        if arg == "status" and not seen_status:
            seen_status = True
        elif arg == "--json":
            as_json = True
        elif arg == "--socket" and rest:
            socket_path = rest.pop(0)
        elif arg.startswith("--socket="):
            socket_path = arg.split("=", 1)[1]
        else:
            return False  # anything else (--timeout too) goes to click, which checks it
    if not seen_status:
        return False

    import json
    import os
    from pathlib import Path

    from wangpctl import render
    from wangpctl.client import Client, DaemonNotRunning, RpcError
    from wangpd import protocol

    socket_path = socket_path or os.environ.get("WANGPCTL_SOCKET") or None
    try:
        timeout = float(os.environ.get("WANGPCTL_TIMEOUT") or 30.0)
    except ValueError:
        return False  # click reports the bad value
    try:
        result = Client(Path(socket_path) if socket_path else None, timeout=timeout).call("status")
    except DaemonNotRunning as exc:
        print(f"wangpctl: {exc}", file=sys.stderr)
        sys.exit(protocol.EXIT_NOT_RUNNING)
    except RpcError as exc:
        if as_json:
            print(json.dumps({"error": {"code": exc.code, "message": exc.message}}))
        else:
            print(f"wangpctl: {exc.message}", file=sys.stderr)
        sys.exit(protocol.EXIT_DAEMON_ERROR)
    if as_json:
        # As wangpctl.cli.dump_json: indented on a terminal, compact for a program.
        if sys.stdout.isatty():
            print(json.dumps(result, indent=2, sort_keys=True))
        else:
            print(json.dumps(result, separators=(",", ":"), sort_keys=True))
    else:
        print(render.status(result))
    return True


def main() -> None:
    try:
        if _fast_status(sys.argv[1:]):
            return
    except BrokenPipeError:  # `wangpctl status | head -3`: the reader stopped early, which is no error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    from wangpctl.cli import main as click_main

    click_main()


if __name__ == "__main__":
    main()
