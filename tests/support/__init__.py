"""Test support shared across the suite: databases and payload builders."""
