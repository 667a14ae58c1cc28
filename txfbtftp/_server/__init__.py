"""The server: listening protocol, sessions, admission, timers, the service."""
