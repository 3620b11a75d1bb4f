"""One module per source kind (see elt/connectors/base.py): found by the engine, listed nowhere."""
