"""Command-line tools: vde_plug, dpipe, wirefilter, vdecapture, vdens."""
