"""Prefix files: formats and validation, the registry state, the folder watcher."""
