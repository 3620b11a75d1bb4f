"""gunicorn settings for the API, used by ./start.sh and the Docker image (`-c python:backend.gunicorn_conf`).

Threaded workers (`gthread`), API_WORKERS processes of API_THREADS threads each (docs/decisions/0009): a
worker's main thread keeps its heartbeat whatever its request threads do, so a CSV download to a slow
client is never killed by the worker timeout half-way (a sync worker is, once `timeout` seconds pass), and
one slow client holds one thread, not a whole worker. backend/api/listing.py caps the CSV downloads of a
worker below its threads (API_CSV_STREAMS), so downloads always leave threads for other calls.

The access log names the path but never the query string: filters such as `patient_id` or `last_name`
name a patient, and no log line may carry personal data.
"""

from backend.config import ApiSettings

_settings = ApiSettings()

worker_class = "gthread"
workers = _settings.workers
threads = _settings.threads

# gunicorn's control socket (gunicornc) would be one path in $HOME shared by every server on the machine (the local
# stack, the tests', the benchmark's): not used here.
control_socket_disable = True

accesslog = "-"
# remote address, time, method, path (no query), protocol, status, bytes, seconds
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(L)s'
