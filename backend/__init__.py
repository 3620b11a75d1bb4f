"""The Flask API that serves the published marts to applications and BI users."""
