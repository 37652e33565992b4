"""Datum privacy-preserving engines: pure Python, no chain imports."""
