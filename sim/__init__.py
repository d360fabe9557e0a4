"""Talbot sim package."""
