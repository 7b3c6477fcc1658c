"""Compose: turn a queued request into an ``OutgoingMessage`` with its MIME bytes."""
