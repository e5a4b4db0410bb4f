"""Executable optimization techniques, the workloads they act on, and the one
measurement harness that judges them. Nothing here imports db, jobs or streamlit."""
