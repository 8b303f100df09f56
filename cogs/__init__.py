"""The Discord adapter: slash commands, buttons and presenters; no torch and no SQL."""
