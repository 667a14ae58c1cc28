"""UDP for TFTP: the listening port, session sockets, batched sends, port ranges."""
