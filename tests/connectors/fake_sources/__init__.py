"""A package of source kinds for the engine's pull tests: scanned like elt.connectors.sources (spec.kinds)."""
