"""Plots for quick prompt experiments: X/Y/Z plots over request fields (the fields declared as
axes) and prompt matrices, each a grid of ordinary requests run through the dispatcher."""
