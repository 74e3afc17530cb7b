"""Thin Faust agents that call the risk core."""
