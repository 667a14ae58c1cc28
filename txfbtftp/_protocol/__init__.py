"""The TFTP protocol, sans I/O: bytes and clock readings in, bytes out.

Nothing in this package imports Twisted, opens a socket or reads a clock
(a test asserts it); the server's sessions and the client drive these
machines and do the I/O.
"""
