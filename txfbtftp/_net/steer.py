"""One client address, one process: steering a SO_REUSEPORT group by source address.

The kernel spreads a reuseport group's datagrams by a hash of the client's
address *and port*, so the requests one machine sends from several ports
(a UEFI size probe, then the download; a PXE ROM's retries) can reach
different processes, and limits kept per client address (the per-client
session limit, the budget for peers that never answered) would be kept
once per process.  A classic BPF program attached to the group
(``SO_ATTACH_REUSEPORT_CBPF``) picks the socket by the source address
alone, so each address meets one process and its limits hold for the
server as a whole.

Loopback sources are left to the kernel's hash (the program answers an
index past the group, which makes the kernel fall back to it): every local
client shares one address, and nobody can forge a loopback source from the
network, which is what the per-address limits are for.

The program sees the datagram with its network header at ``SKF_NET_OFF``:
IPv4's source address is 4 bytes at 12, IPv6's 16 bytes at 8 (it hashes the
last 4, which differ between the hosts of a subnet).  A socket's index in
the group is the order of binding, which never changes here: the main
process binds every share and keeps them all for its whole life.
"""
from __future__ import annotations

import ctypes
import socket
import struct

SO_ATTACH_REUSEPORT_CBPF = 51
_NET = -0x100000  # SKF_NET_OFF: offsets relative to the network header

# Classic BPF opcodes (linux/filter.h).
_LD_B_ABS, _LD_W_ABS = 0x30, 0x20
_ALU_RSH_K, _ALU_ADD_X, _ALU_MOD_K, _TAX = 0x74, 0x0C, 0x94, 0x07
_JEQ_K, _JA, _RET_A, _RET_K = 0x15, 0x05, 0x16, 0x06

#: Past any group: "let the kernel hash it".
_KERNEL = 0xFFFFFFFF


def program(shares: int) -> list[tuple[int, int, int, int]]:
    """The filter for a group of ``shares`` sockets: ``(code, jt, jf, k)``
    instructions (jumps count from the next instruction)."""
    return [
        (_LD_B_ABS, 0, 0, _NET),           # 0  A = the IP header's first byte
        (_ALU_RSH_K, 0, 0, 4),             # 1  A = the IP version
        (_JEQ_K, 0, 4, 4),                 # 2  IPv4: on; IPv6: to 7
        (_LD_B_ABS, 0, 0, _NET + 12),      # 3  A = the source's first byte
        (_JEQ_K, 16, 0, 127),              # 4  127.0.0.0/8: to 21
        (_LD_W_ABS, 0, 0, _NET + 12),      # 5  A = the IPv4 source
        (_JA, 0, 0, 9),                    # 6  to 16
        (_LD_W_ABS, 0, 0, _NET + 8),       # 7  IPv6: is the source ::1?
        (_JEQ_K, 0, 6, 0),                 # 8    word 0 zero, else to 15
        (_LD_W_ABS, 0, 0, _NET + 12),      # 9
        (_JEQ_K, 0, 4, 0),                 # 10   word 1 zero, else to 15
        (_LD_W_ABS, 0, 0, _NET + 16),      # 11
        (_JEQ_K, 0, 2, 0),                 # 12   word 2 zero, else to 15
        (_LD_W_ABS, 0, 0, _NET + 20),      # 13
        (_JEQ_K, 6, 1, 1),                 # 14   word 3 one: to 21; else to 16
        (_LD_W_ABS, 0, 0, _NET + 20),      # 15 A = the IPv6 source's last word
        (_TAX, 0, 0, 0),                   # 16 fold the high half onto the low:
        (_ALU_RSH_K, 0, 0, 16),            # 17   neighbours stay neighbours,
        (_ALU_ADD_X, 0, 0, 0),             # 18   subnets still count
        (_ALU_MOD_K, 0, 0, shares),        # 19
        (_RET_A, 0, 0, 0),                 # 20 the share of this address
        (_RET_K, 0, 0, _KERNEL),           # 21 loopback: the kernel's hash
    ]


def steer_by_source(sock: socket.socket, shares: int) -> None:
    """Make ``sock``'s reuseport group pick its socket by the client's address.
    Raises OSError where the kernel cannot (the kernel's own hash then stays)."""
    insns = b"".join(struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF) for code, jt, jf, k in program(shares))
    buf = ctypes.create_string_buffer(insns)
    fprog = struct.pack("HL", len(insns) // 8, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
