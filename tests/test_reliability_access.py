"""Who may do what on the control socket, decided by the kernel (file modes) and by SO_PEERCRED, never by the
request."""

from __future__ import annotations

import grp
import os
import pwd
import stat
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import DaemonProcess, call_as

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="needs root to create users and act as them")


@pytest.fixture
def accounts() -> Iterator[tuple[str, int, int, int]]:
    """A temporary group with one member and one non-member: (group, gid, member uid, stranger uid)."""
    tag = uuid.uuid4().hex[:6]
    group, member, stranger = f"wpg{tag}", f"wpm{tag}", f"wps{tag}"
    subprocess.run(["groupadd", group], check=True)
    subprocess.run(["useradd", "-M", "-N", "-G", group, member], check=True)
    subprocess.run(["useradd", "-M", "-N", stranger], check=True)
    try:
        yield group, grp.getgrnam(group).gr_gid, pwd.getpwnam(member).pw_uid, pwd.getpwnam(stranger).pw_uid
    finally:
        for user in (member, stranger):
            subprocess.run(["userdel", user], check=False)
        subprocess.run(["groupdel", group], check=False)


def test_socket_group_members_may_change_others_cannot_even_connect(
    daemon_factory: Callable[..., DaemonProcess], accounts: tuple[str, int, int, int], short_dir: Path
) -> None:
    group, gid, member, stranger = accounts
    os.chmod(short_dir, 0o755)  # the test's own temp parent; the daemon makes and guards the socket folder
    sock_dir = short_dir / "run"
    daemon = daemon_factory(daemon={"socket": str(sock_dir / "wangpd.sock"), "socket_group": group})
    daemon.socket = sock_dir / "wangpd.sock"
    daemon.start()
    folder, sock = os.stat(sock_dir), os.stat(daemon.socket)
    assert stat.S_IMODE(folder.st_mode) == 0o750 and folder.st_gid == gid
    assert stat.S_IMODE(sock.st_mode) == 0o660 and sock.st_gid == gid

    users_gid = 100
    assert call_as(member, daemon.socket, "pause", users_gid, (gid,))["result"] == {"paused": True}
    assert call_as(member, daemon.socket, "status", users_gid, (gid,))["result"]["paused"] is True
    refused = call_as(stranger, daemon.socket, "status", users_gid)
    assert refused.get("os_error") == 13, refused  # EACCES: the kernel keeps strangers out of the 0750 folder


def test_read_only_others_switch(daemon_factory: Callable[..., DaemonProcess], short_dir: Path) -> None:
    nobody = pwd.getpwnam("nobody").pw_uid
    daemon = daemon_factory(daemon={"read_only_others": False}).start()
    # Loosen the file modes on purpose: the peer-credential check alone must hold.
    for path in (short_dir, daemon.socket.parent):
        os.chmod(path, 0o755)
    os.chmod(daemon.socket, 0o666)
    answer = call_as(nobody, daemon.socket, "status")
    assert answer["error"]["code"] == -32003, answer
    assert call_as(nobody, daemon.socket, "pause")["error"]["code"] == -32003
