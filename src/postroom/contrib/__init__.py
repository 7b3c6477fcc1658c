"""Integrations with other frameworks; each needs its optional extra installed."""
