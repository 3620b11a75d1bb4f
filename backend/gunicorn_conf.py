"""gunicorn settings for the API, used by ./start.sh and the Docker image (`-c python:backend.gunicorn_conf`).

The access log names the path but never the query string: filters such as `patient_id` or `last_name`
name a patient, and no log line may carry personal data.
"""

accesslog = "-"
# remote address, time, method, path (no query), protocol, status, bytes, seconds
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(L)s'
