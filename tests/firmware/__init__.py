"""Real boot firmware in QEMU against ``twistd tftp`` (see docs/firmware.rst)."""
