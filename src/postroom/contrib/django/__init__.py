"""Django integration: ``EMAIL_BACKEND = "postroom.contrib.django.EmailBackend"``."""

from __future__ import annotations

from postroom.contrib.django.backend import EmailBackend

__all__ = ["EmailBackend"]
