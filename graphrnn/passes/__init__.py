"""Optimising rewrites of the IR; each pass is its own module and can be switched off by name."""
