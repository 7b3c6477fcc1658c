"""``python -m postroom``."""

from __future__ import annotations

from postroom.cli import main

main()
