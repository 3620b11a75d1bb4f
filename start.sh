#!/usr/bin/env bash
# The one entry point for a new machine. Needs only Python 3.11 on PATH.
#
#   ./start.sh              install (first time), start the whole stack on loopback (dashboard included), load demo data,
#                           run medilink_ingest + medilink_marts (and build claims_marts); Ctrl-C stops everything, data stays in .data/
#   ./start.sh test [ARGS]  run the whole test suite (pytest ARGS), starting its own throwaway servers
#   ./start.sh bench NAME   run benchmarks/NAME.py and print its figures
#   ./start.sh elt ARGS     run the `elt` command against the running stack (e.g. ./start.sh elt files)
#   ./start.sh api-key ...  create, list or revoke API keys (e.g. ./start.sh api-key create --name me --role analyst)
#   ./start.sh bi-user ...  create, list or drop a BI tool's Postgres login (e.g. ./start.sh bi-user create metabase)
#   ./start.sh screenshots  PNGs of every dashboard page and the API explorer into docs/images/ (stack running)
#   ./start.sh reset        delete .data/ (the local database, bucket contents and logs)
set -euo pipefail
cd "$(dirname "$0")"

find_python() {
  for candidate in "${PYTHON:-}" python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "error: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

install() {
  local python stamp
  if [ ! -x .venv/bin/python ]; then
    python=$(find_python)
    echo "==> creating .venv with $("$python" --version)"
    "$python" -m venv .venv
  fi
  stamp=".venv/.installed-$(cat requirements.txt constraints.txt pyproject.toml | sha256sum 2>/dev/null | cut -c1-16 || shasum -a 256 requirements.txt | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    echo "==> installing pinned dependencies (first time: a few minutes)"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -r requirements.txt -c constraints.txt
    .venv/bin/python -m pip install --quiet --no-deps -e .
    rm -f .venv/.installed-*
    touch "$stamp"
  fi
}

# Read KEY=value lines from a file (default .env) without overriding what is already exported
# (FOO=1 ./start.sh wins over .env).
load_env() {
  local file=${1:-.env} key value
  [ -f "$file" ] || return 0
  while IFS='=' read -r key value || [ -n "$key" ]; do
    [[ $key =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || continue
    value=${value%\"}; value=${value#\"}; value=${value%\'}; value=${value#\'}
    [ -n "${!key+x}" ] || export "$key=$value"
  done < "$file"
}

export AIRFLOW__COSMOS__ENABLE_TELEMETRY=False DO_NOT_TRACK=1 SCARF_ANALYTICS=false PYTHONUNBUFFERED=1

command=${1:-up}
case "$command" in
  up)
    [ -f .env ] || { cp .env.example .env; echo "==> created .env from .env.example (edit it to change ports and paths)"; }
    load_env
    install
    exec .venv/bin/python -m elt.devstack up
    ;;
  test)
    shift
    install
    # The suite starts its own Postgres and S3 endpoint; .env is deliberately not read.
    set +e
    .venv/bin/python -m pytest "$@"
    status=$?
    set -e
    if [ "$status" -eq 5 ]; then echo "error: no tests were collected" >&2; fi
    exit "$status"
    ;;
  bench)
    name=${2:?usage: ./start.sh bench NAME (see benchmarks/)}
    [ -f "benchmarks/$name.py" ] || { echo "error: no benchmark benchmarks/$name.py; have: $(ls benchmarks/*.py 2>/dev/null | xargs -n1 basename 2>/dev/null | sed 's/\.py$//' | tr '\n' ' ')" >&2; exit 2; }
    install
    exec .venv/bin/python "benchmarks/$name.py" "${@:3}"
    ;;
  elt)
    shift
    load_env
    install
    load_env "${DATA_DIR:-.data}/stack.env"  # where the running stack is (written by ./start.sh)
    exec .venv/bin/elt "$@"
    ;;
  api-key)
    shift
    load_env
    install
    load_env "${DATA_DIR:-.data}/stack.env"  # the running stack's database
    exec .venv/bin/flask --app backend.wsgi api-key "$@"
    ;;
  bi-user)
    shift
    load_env
    install
    load_env "${DATA_DIR:-.data}/stack.env"  # the running stack's database, as its owner
    exec .venv/bin/elt bi-user "$@"
    ;;
  screenshots)
    shift
    load_env
    install
    exec .venv/bin/python -m elt.devstack.screenshots "$@"
    ;;
  reset)
    load_env
    data_dir=${DATA_DIR:-.data}
    read -r -p "Delete $data_dir (database, bucket contents, logs)? [y/N] " answer
    [ "$answer" = "y" ] || exit 0
    # A checkout in a private folder keeps its Postgres cluster elsewhere, behind this link (elt/devstack/servers.py).
    if [ -L "$data_dir/postgres" ]; then
      cluster=$(readlink -f "$data_dir/postgres")
      rm -rf "$cluster" && echo "deleted $cluster"
    fi
    rm -rf "$data_dir" && echo "deleted $data_dir"
    ;;
  *)
    echo "usage: ./start.sh [up|test [pytest args]|bench NAME|elt ARGS|api-key create|list|revoke ...|bi-user create|list|drop ...|screenshots|reset]" >&2
    exit 2
    ;;
esac
