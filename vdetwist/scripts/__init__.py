"""Command-line tools: vde_plug and dpipe."""
