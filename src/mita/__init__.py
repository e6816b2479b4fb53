"""Mita: an open STS prepayment metering platform."""

__version__ = "0.1.0"
