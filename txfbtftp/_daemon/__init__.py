"""The daemon: ``twistd tftp`` options, the service it builds, the worker processes."""
