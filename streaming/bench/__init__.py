"""Bench stage."""
