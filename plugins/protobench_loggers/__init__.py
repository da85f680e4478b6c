"""Built-in loggers: live curves of a run while it trains."""
