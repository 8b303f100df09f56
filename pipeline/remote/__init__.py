"""Remote GPU workers through Redis Streams (docs/scale-out.md): the message schema, the
stream layout, the bot's `RemoteBackend` and worker registry, and the worker's consumer loop."""
