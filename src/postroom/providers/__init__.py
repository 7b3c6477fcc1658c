"""Providers: one adapter per delivery service behind the ``Provider`` protocol,
plus the registry that builds them from ``email_providers`` rows."""
