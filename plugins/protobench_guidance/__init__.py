"""Built-in guidance."""
