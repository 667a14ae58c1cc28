"""What happened: logs, session records, server statistics, Prometheus metrics."""
