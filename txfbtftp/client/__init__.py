"""A TFTP client for Twisted, built on the server's own protocol machines.

:func:`get` downloads, :func:`put` uploads; both take the reactor, a
``tftp://`` URL (or a host and a path), the options, and return a Deferred
that fires with a :class:`ClientResult`: the bytes (when kept in memory)
and a :class:`~txfbtftp.SessionRecord` of the transfer::

    from twisted.internet.defer import ensureDeferred
    from twisted.internet.task import react
    from txfbtftp.client import get

    async def main(reactor):
        result = await get(reactor, "tftp://192.0.2.1/pxelinux.0", windowsize=16)
        print(len(result.data), "bytes in", result.record.duration, "s")

    react(lambda reactor: ensureDeferred(main(reactor)))

A failure is the exception a backend raises for the server's ERROR
(:class:`~txfbtftp.FileNotFound`, :class:`~txfbtftp.AccessViolation`,
:class:`~txfbtftp.DiskFull`, :class:`~txfbtftp.FileExists`, ...;
:class:`~txfbtftp.TFTPError` with its ``code`` for the rest), or
:class:`~txfbtftp.TFTPTimeout` when the server stays silent for the whole
watchdog schedule.
"""
from txfbtftp._protocol.errors import TFTPTimeout
from txfbtftp.client._api import DEFAULT_CLIENT_SCHEDULE, MTU_BLKSIZE, get, put, resolve
from txfbtftp.client._driver import Progress, TransferProtocol
from txfbtftp.client._io import Readable, Sink, Source, Writable
from txfbtftp.client._result import ClientResult
from txfbtftp.client._url import TFTPURL

__all__ = ["get", "put", "ClientResult", "TFTPURL", "TFTPTimeout", "TransferProtocol", "Progress", "Sink",
           "Source", "Readable", "Writable", "DEFAULT_CLIENT_SCHEDULE", "MTU_BLKSIZE", "resolve"]
