"""The composition root: settings, the CLI, the Discord bot and the service they share."""
