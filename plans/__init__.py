"""Talbot plans package."""
