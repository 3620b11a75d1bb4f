"""One module per destination kind (see elt/connectors/base.py): found by the engine, listed nowhere."""
