"""Sending a window at once (UDP segmentation offload) and without it."""
import socket

import pytest

from txfbtftp._net.batch import BatchSender


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "one-by-one"])
def test_send_batch_keeps_every_packet_and_its_order(offload):
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # 103 packets must all fit
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    packets = [bytes([n % 256]) * 1472 for n in range(100)] + [b"short"] + [b"x" * 600, b"y" * 600]
    BatchSender(offload).send(tx, rx.getsockname(), packets)
    got = [rx.recv(70000) for _ in packets]
    assert got == packets
    rx.close()
    tx.close()
