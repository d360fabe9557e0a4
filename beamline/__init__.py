"""Talbot beamline package."""
