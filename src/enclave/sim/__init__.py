"""The digital twin: replay traces and synthetic workloads through the real scheduler core
with a simulated clock."""
