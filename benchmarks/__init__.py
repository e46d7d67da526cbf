"""Benchmarks of rxrunpod side by side with the RunPod SDK; run ``python -m benchmarks``."""
