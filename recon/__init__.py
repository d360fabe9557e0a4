"""Talbot recon package."""
