#!/bin/sh
# Container entrypoint: turn secret files into environment variables, then
# replace this shell with `sqlsentinel "$@"` (exec: signals go to the daemon).
#
# Every regular file directly in $SQLSENTINEL_SECRETS_DIR (default /run/secrets,
# where Docker and Compose mount secrets) becomes a variable named after the file,
# upper-cased, with "-" and "." turned into "_": /run/secrets/pg_password gives
# PG_PASSWORD, which the alert file reads as ${PG_PASSWORD}. A variable already
# set in the environment wins over the file. Values are never printed.
set -eu

secrets_dir=${SQLSENTINEL_SECRETS_DIR:-/run/secrets}
if [ -d "$secrets_dir" ]; then
  for file in "$secrets_dir"/*; do
    [ -f "$file" ] || continue
    name=$(basename "$file" | tr 'a-z.-' 'A-Z__')
    case $name in
      [A-Z_]*) ;;
      *) continue ;;
    esac
    case $name in
      *[!A-Z0-9_]*) continue ;;
    esac
    if eval "[ -n \"\${$name+set}\" ]"; then
      continue
    fi
    if ! value=$(cat "$file" 2>/dev/null); then
      echo "sqlsentinel-entrypoint: secret file $file is not readable by uid $(id -u)" >&2
      exit 1
    fi
    export "$name=$value"
  done
fi

exec sqlsentinel "$@"
