"""The parts of benchmarks/run.py, one concern per module; run.py stays the entry point."""
