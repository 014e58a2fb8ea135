"""Plots for quick prompt experiments: X/Y/Z plots over request fields and prompt matrices,
each a grid of ordinary requests run through the dispatcher (issue 21)."""
