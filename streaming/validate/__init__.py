"""Validate stage."""
