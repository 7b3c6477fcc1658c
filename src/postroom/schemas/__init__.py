"""The API's pydantic models: the spec's interfaces in camelCase JSON."""
