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


class TFTPTimeout(TFTPError):
    """The peer went silent: the watchdog's schedule ran out.

    A :class:`TFTPError`, so that one ``except TFTPError`` catches every way
    a transfer can fail; but no ERROR packet was exchanged, so its ``code``
    (0) says nothing: tell a timeout apart by its class.
    """

    def __init__(self, message: str = "Timed out") -> None:
        super().__init__(message)


_BY_CODE: dict[int, type[TFTPError]] = {
    cls.code: cls for cls in (FileNotFound, AccessViolation, DiskFull, Unsupported, FileExists, OptionsRefused)}


def from_code(code: int, message: str = "") -> TFTPError:
    """The exception for an ERROR packet: the class a backend raises for
    ``code``, or a :class:`TFTPError` carrying ``code`` when there is none
    (0, 5, 7, and codes outside RFC 1350)."""
    cls = _BY_CODE.get(code)
    if cls is not None:
        return cls(message)
    err = TFTPError(message or packet.MESSAGES.get(code, "Error %d" % code))
    err.code = code
    return err


def to_tftp(exc: BaseException) -> tuple[int, str, bool]:
    """``(code, message, expected)`` for any exception.

    ``expected`` is False for exceptions that are not TFTP errors: those get a
    generic ERROR 0 on the wire and a traceback in the log.
    """
    if isinstance(exc, TFTPError):
        return exc.code, exc.message, True
    return packet.ERR_UNDEFINED, packet.MESSAGES[packet.ERR_UNDEFINED], False
