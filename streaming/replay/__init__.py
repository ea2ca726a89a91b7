"""Replay stage."""
