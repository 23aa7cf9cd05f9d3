"""Development tools (not run by any service)."""
