"""``get`` and ``put``: a URL (or host and path) and options in, a Deferred out."""
from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IHostResolution, IResolutionReceiver
from zope.interface import implementer

from txfbtftp._interfaces import Address, IReader, IWriter
from txfbtftp._netascii import NetasciiReader, NetasciiWriter
from txfbtftp._protocol.client import ClientTransfer, request_options
from txfbtftp._protocol.schedule import Schedule
from txfbtftp._types import IClientReactor
from txfbtftp.client._driver import Progress, TransferProtocol
from txfbtftp.client._io import ConsumerWriter, MemoryWriter, Sink, Source, reader_for, writer_for
from txfbtftp.client._result import ClientResult
from txfbtftp.client._url import DEFAULT_PORT, MODES, TFTPURL

#: The client's watchdog unless told otherwise: 31 s for a silent server.
DEFAULT_CLIENT_SCHEDULE = Schedule.parse("1,2,4,8,16")
#: The largest block that fits one Ethernet frame (1500 bytes less the IP,
#: UDP and TFTP headers), by address family.
MTU_BLKSIZE = {4: 1468, 6: 1448}


def get(reactor: IClientReactor, url_or_host: str, path: str | None = None, *, port: int = DEFAULT_PORT,
        to: Sink | None = None, mode: str | None = None, blksize: int | None = None, windowsize: int = 1,
        tsize: bool = True, timeout: int | None = None, utimeout: int | None = None,
        schedule: Schedule | None = None, progress: Progress | None = None,
        bind: str | None = None) -> Deferred[ClientResult]:
    """Download a file; the Deferred fires with a :class:`ClientResult`.

    ``url_or_host`` is a ``tftp://`` URL, or a host with ``path`` (and
    ``port``).  Without ``to`` the file is kept in memory
    (``result.data``); with ``to`` (a binary file, an
    :class:`~twisted.internet.interfaces.IConsumer` or an
    :class:`~txfbtftp.IWriter`) it streams there block by block.

    ``blksize`` defaults to what fits a 1500-byte MTU; 512 asks for nothing.
    ``windowsize`` above 1 asks for RFC 7440 windows; ``tsize`` asks for the
    size (not in netascii, where a server cannot know it); ``timeout`` or
    ``utimeout`` ask the server for its retransmission timeout.
    ``schedule`` is this side's watchdog.  ``mode`` is ``octet`` (the
    default, or the URL's ``;mode=``) or ``netascii``, converted to local
    line ends.  ``progress(done, total)`` is called as blocks arrive;
    ``bind`` picks the local address.

    Fails with the exception a backend raises for the server's ERROR
    (:class:`~txfbtftp.FileNotFound`, ...; :class:`~txfbtftp.TFTPError`
    with its ``code`` for the others), :class:`~txfbtftp.TFTPTimeout`
    when the server goes silent, or the writer's own exception.
    """
    target, mode = _target(url_or_host, path, port, mode)
    writer = writer_for(to)
    wire: IWriter = NetasciiWriter(writer) if mode == "netascii" else writer
    options = _Options(blksize, windowsize, 0 if tsize and mode == "octet" else None, timeout, utimeout)
    d = _start(reactor, target, mode, options, schedule, progress, bind, None, wire, writer)
    if isinstance(writer, MemoryWriter):
        d.addCallback(lambda result: dataclasses.replace(result, data=writer.data))
    return d


def put(reactor: IClientReactor, url_or_host: str, path: str | None = None, *, source: Source,
        port: int = DEFAULT_PORT, mode: str | None = None, blksize: int | None = None, windowsize: int = 1,
        tsize: bool = True, timeout: int | None = None, utimeout: int | None = None,
        schedule: Schedule | None = None, progress: Progress | None = None,
        bind: str | None = None) -> Deferred[ClientResult]:
    """Upload ``source`` (bytes, a binary file or an :class:`~txfbtftp.IReader`).

    The options are those of :func:`get`; ``tsize`` announces the size
    when it is known (bytes, a regular file, a reader with a ``size``), so
    a server can refuse a file too large before it arrives.  A file is read
    block by block, never whole.  Fires with a :class:`ClientResult` once the
    server has acknowledged the last block.
    """
    target, mode = _target(url_or_host, path, port, mode)
    reader = reader_for(source)
    wire: IReader = reader
    size = reader.size if tsize else None
    if mode == "netascii":
        wire, size = NetasciiReader(reader), None
    options = _Options(blksize, windowsize, size, timeout, utimeout)
    return _start(reactor, target, mode, options, schedule, progress, bind, wire, None, None)


class _Options:
    """The request's options; the block size waits for the address family."""

    def __init__(self, blksize: int | None, windowsize: int, tsize: int | None, timeout: int | None,
                 utimeout: int | None) -> None:
        self.args = (blksize, windowsize, tsize, timeout, utimeout)
        request_options(blksize or MTU_BLKSIZE[4], windowsize, tsize, timeout, utimeout)  # ValueError now

    def for_family(self, family: int) -> dict[str, str]:
        blksize, windowsize, tsize, timeout, utimeout = self.args
        return request_options(blksize or MTU_BLKSIZE[family], windowsize, tsize, timeout, utimeout)


def _target(url_or_host: str, path: str | None, port: int, mode: str | None) -> tuple[TFTPURL, str]:
    if path is None:
        target = TFTPURL.parse(url_or_host)
    elif "://" in url_or_host:
        raise ValueError("give a URL, or a host and a path, not both")
    else:
        target = TFTPURL(url_or_host, path, port)
    mode = (mode or target.mode or "octet").lower()
    if mode not in MODES:
        raise ValueError("mode must be octet or netascii, not %r" % mode)
    return target, mode


def _start(reactor: IClientReactor, target: TFTPURL, mode: str, options: _Options, schedule: Schedule | None,
           progress: Progress | None, bind: str | None, reader: IReader | None, writer: IWriter | None,
           sink: IWriter | None) -> Deferred[ClientResult]:
    """Resolve, then run the transfer on a port of its own; ``sink`` is the
    writer under a netascii wrapper (a consumer learns its producer)."""
    schedule = schedule or DEFAULT_CLIENT_SCHEDULE

    def launch(server: Address) -> Deferred[ClientResult]:
        family = 6 if ":" in server[0] else 4
        transfer = ClientTransfer(target.path, reader is not None, mode, options.for_family(family), schedule,
                                  dally=schedule.waits[0])
        proto = TransferProtocol(reactor, transfer, server, reader, writer, progress)
        if isinstance(sink, ConsumerWriter):
            sink.attach(proto)
        try:
            reactor.listenUDP(0, proto, bind or ("::" if family == 6 else "0.0.0.0"), 65536)
        except Exception:
            never_started(None)
            raise
        return proto.done

    def never_started(failure: Any) -> Any:
        # Once the port is listening the protocol releases them itself.
        if reader is not None:
            reader.close()
        if writer is not None:
            writer.abort()
        return failure

    return resolve(reactor, target.host, target.port).addCallbacks(launch, never_started)


def resolve(reactor: IClientReactor, host: str, port: int) -> Deferred[Address]:
    """``(address, port)`` for ``host``: a literal as it is, a name through
    the reactor's resolver (its first address)."""
    try:
        return succeed((str(ipaddress.ip_address(host)), port))
    except ValueError:
        pass
    receiver = _Receiver(host, port)
    reactor.nameResolver.resolveHostName(receiver, host, port, transportSemantics="UDP")
    return receiver.deferred


@implementer(IResolutionReceiver)
class _Receiver:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.addresses: list[str] = []
        self.deferred: Deferred[Address] = Deferred()

    def resolutionBegan(self, resolution: IHostResolution) -> None:
        pass

    def addressResolved(self, address: Any) -> None:
        self.addresses.append(address.host)

    def resolutionComplete(self) -> None:
        if self.deferred.called:
            return  # cancelled meanwhile
        if self.addresses:
            self.deferred.callback((self.addresses[0], self.port))
        else:
            self.deferred.errback(DNSLookupError(self.host))
