"""Exceptions a backend raises, and the TFTP error code each one becomes."""
from __future__ import annotations


from txfbtftp._protocol import packet


class TFTPError(Exception):
    """A failure that has a TFTP error code.

    The message goes to the client, so it must not reveal paths or internals;
    the default is the RFC's wording for the code.
    """

    code = packet.ERR_UNDEFINED

    def __init__(self, message: str = "") -> None:
        super().__init__(message or packet.MESSAGES[self.code])

    @property
    def message(self) -> str:
        return self.args[0]


class FileNotFound(TFTPError):
    code = packet.ERR_NOT_FOUND


class AccessViolation(TFTPError):
    code = packet.ERR_ACCESS


class DiskFull(TFTPError):
    code = packet.ERR_DISK_FULL


class Unsupported(TFTPError):
    code = packet.ERR_ILLEGAL


class FileExists(TFTPError):
    code = packet.ERR_EXISTS


class OptionsRefused(TFTPError):
    code = packet.ERR_OPTIONS


class ServerBusy(TFTPError):
    def __init__(self, message: str = "Server busy, try again later") -> None:
        super().__init__(message)


def to_tftp(exc: BaseException) -> tuple[int, str, bool]:
    """``(code, message, expected)`` for any exception.

    ``expected`` is False for exceptions that are not TFTP errors: those get a
    generic ERROR 0 on the wire and a traceback in the log.
    """
    if isinstance(exc, TFTPError):
        return exc.code, exc.message, True
    return packet.ERR_UNDEFINED, packet.MESSAGES[packet.ERR_UNDEFINED], False
