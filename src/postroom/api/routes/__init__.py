"""One module per section of the spec's endpoint list."""
