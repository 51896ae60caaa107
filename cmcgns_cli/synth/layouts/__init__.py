"""One writer per raw layout; each returns its truth records and file counts."""
