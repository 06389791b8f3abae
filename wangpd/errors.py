"""One exception tree: every error says what went wrong, where, and what to do."""

from __future__ import annotations

from wangpd import protocol


class WangpError(Exception):
    """Base of every error wangpd raises on purpose.

    ``rpc_code`` is the JSON-RPC error code the control socket answers with.
    """

    default_message = "wangpd error"
    rpc_code = protocol.INTERNAL_ERROR

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(WangpError):
    """The configuration cannot be used; the message names the file, key (and line when known)."""

    default_message = "bad configuration"
    rpc_code = protocol.CONFIG_ERROR
    MAX_LENGTH = 1000  # the message quotes the bad value: one line, never megabytes

    def __init__(self, message: str | None = None) -> None:
        if message is not None and len(message) > self.MAX_LENGTH:
            message = message[: self.MAX_LENGTH - 20] + f"... ({len(message)} chars)"
        super().__init__(message)


class InvalidParams(WangpError):
    default_message = "invalid parameters"
    rpc_code = protocol.INVALID_PARAMS


class NotFound(WangpError):
    default_message = "not found"
    rpc_code = protocol.NOT_FOUND


class BadState(WangpError):
    default_message = "not allowed in this state"
    rpc_code = protocol.BAD_STATE


class DiskFull(WangpError):
    default_message = "disk full"
    rpc_code = protocol.DISK_FULL


class AlreadyRunning(WangpError):
    default_message = "another wangpd is already listening on this socket"


class DefinitionError(WangpError):
    """A Wan2GP model definition cannot be resolved; fails that model only."""

    default_message = "bad model definition"


class TransferError(WangpError):
    """A download failed. ``retryable`` says whether trying again may help."""

    default_message = "download failed"

    def __init__(self, message: str | None = None, *, retryable: bool = True, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class ChecksumMismatch(TransferError):
    """The finished file does not have the expected sha256; the part has been deleted."""

    default_message = "checksum mismatch"


class StoreError(WangpError):
    """The queue database cannot be opened or written (locked, corrupt, its disk full)."""

    default_message = "the queue database cannot be used"
    rpc_code = protocol.DISK_FULL  # what a client meets at run time: a write refused, nothing changed


class SocketInUse(AlreadyRunning):
    """Another daemon holds the control socket (or its lock)."""

    default_message = "another wangpd holds the control socket"


class TargetExists(WangpError):
    """Something that is not our link is already at the target; it was left alone."""

    default_message = "target exists, left alone"


class OutsideRoots(WangpError):
    """The target is not under any allowed Wan2GP folder."""

    default_message = "target outside the Wan2GP folders"
