"""Services: the use cases (send, status, bootstrap, keys) that API, CLI and library share."""
