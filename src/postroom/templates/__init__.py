"""Stored, versioned email templates: sandboxed rendering (``engine``), variable checks
(``variables``) and the immutable version history (``versions``)."""
