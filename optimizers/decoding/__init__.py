"""Decoding-time machinery: caches and loops the scenarios run."""
