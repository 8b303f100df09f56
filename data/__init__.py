"""Persistence: the SQLite database, its migrations and repositories, and files on disk."""
