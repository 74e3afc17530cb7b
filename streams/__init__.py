"""The Faust app and its wiring: settings, topics, tables, web views, metrics and the CLI."""
