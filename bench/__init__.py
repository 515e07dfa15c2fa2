"""Performance benches: each prints a table and a JSON line (``python -m bench.<name> --help``)."""
