"""Addresses as people and backends read them."""
from __future__ import annotations


def natural(host: str) -> str:
    """``::ffff:192.0.2.7`` -> ``192.0.2.7``; anything else unchanged."""
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host
