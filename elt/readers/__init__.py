"""Pure parsing: bytes in, header mappings and typed rows out. No boto3, no SQL."""
