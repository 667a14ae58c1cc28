"""Capture every frame on one interface into a pcap file, until SIGTERM.

    python capture.py IFACE OUT.pcap [SNAPLEN]

A raw AF_PACKET socket sees both directions.  On SIGTERM it first reads
what the kernel still holds for it, then exits: a capture stopped after the
guest is gone is complete, which ``tcpdump`` (which stops at once on a
signal, whatever it has not processed yet) does not promise on a busy
machine.  Prints "listening on IFACE" once the socket is bound, and on exit
"captured N dropped D" (D: frames the kernel could not queue for it).

Standalone: run inside the lab's namespace with ``ip netns exec``.
"""
import select
import signal
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_RCVBUFFORCE = 33
SO_TIMESTAMPNS = 35


def main():
    iface, out = sys.argv[1], sys.argv[2]
    snaplen = int(sys.argv[3]) if len(sys.argv) > 3 else 300
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 256 << 20)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.bind((iface, 0))
    sock.setblocking(False)
    count = 0
    buf = bytearray(65536)
    with open(out, "wb", buffering=1 << 20) as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, 1))  # pcap, Ethernet
        print("listening on %s" % iface, flush=True)
        draining = False
        while True:
            if stop and not draining:
                draining = True
            if not draining:
                select.select([sock], [], [], 0.2)
            while True:
                try:
                    n, anc, _, _ = sock.recvmsg_into([buf], socket.CMSG_SPACE(16), socket.MSG_TRUNC)
                except (BlockingIOError, InterruptedError):
                    break
                sec, usec = int(time.time()), 0
                for level, kind, data in anc:  # when the kernel saw the frame, not when it was read
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                        sec, nsec = struct.unpack("qq", data[:16])
                        usec = nsec // 1000
                kept = min(n, snaplen)
                f.write(struct.pack("<IIII", sec, usec, kept, n))
                f.write(buf[:kept])
                count += 1
            if draining:
                break
    stats = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
    _, drops = struct.unpack("II", stats)
    print("captured %d dropped %d" % (count, drops), flush=True)


if __name__ == "__main__":
    main()
