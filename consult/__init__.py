"""Consultation engine: yearly consultations of a panel of partnerships, end to end."""

__version__ = "0.1.0"
