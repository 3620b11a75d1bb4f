"""Object storage I/O. S3 today; anything that speaks the S3 protocol (MinIO, moto, R2) works the same."""
