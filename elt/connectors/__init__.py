"""Connectors (issue 16): declared sources into the warehouse and destinations out of it. See base.py."""
