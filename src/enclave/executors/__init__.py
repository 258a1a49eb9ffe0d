"""Executors: where jobs actually run. One small interface, a table of implementations."""
