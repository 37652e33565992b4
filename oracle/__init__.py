"""Datum."""
