"""Talbot devices package."""
