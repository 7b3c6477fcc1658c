"""Postroom: self-hosted email delivery with a durable database queue."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
