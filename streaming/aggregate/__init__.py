"""Aggregate stage."""
