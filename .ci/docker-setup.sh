#!/usr/bin/env bash
# Prepare this machine for the Docker tests and template checks.
#
#   base=$(bash .ci/docker-setup.sh)   # then: export SQLSENTINEL_DOCKER_BASE_IMAGE=$base
#
# 1. Installs Debian's docker-compose and prometheus (promtool) when missing:
#    the compose/ and Prometheus checks need them, with or without an engine.
# 2. Starts a Docker engine with ../shared/ci/docker-engine.sh (shared/ sits
#    beside the repository) and builds the stand-in python:3.11-slim base image
#    with ../shared/ci/python-base-image.sh.
# 3. Prints the base image tag as the only line on stdout. When the engine or
#    the base image cannot be had it prints one loud line on stderr, an empty
#    line on stdout, and still exits 0: the Docker tests then skip, saying why,
#    and every other test runs.
# Progress goes to stderr so that $(...) captures the tag alone.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared_ci=${SQLSENTINEL_SHARED_CI:-$repo/../shared/ci}

log() { echo "docker-setup: $*" >&2; }
give_up() {
  echo "!!!!! DOCKER TESTS WILL BE SKIPPED: $* !!!!!" >&2
  echo ""
  exit 0
}

missing=()
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if ((${#missing[@]})); then
  log "installing ${missing[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >&2; then
    log "could not install ${missing[*]}; the template checks will fail"
  fi
fi

[[ -x $shared_ci/docker-engine.sh ]] || give_up "no $shared_ci/docker-engine.sh"
if ! "$shared_ci/docker-engine.sh" >&2; then
  give_up "the Docker engine did not start (docker-engine.sh failed; see its log above)"
fi
base_out=$("$shared_ci/python-base-image.sh" 2> >(cat >&2)) || give_up "python-base-image.sh failed"
sed '$d' <<<"$base_out" >&2
tag=$(tail -n 1 <<<"$base_out")
[[ -n $tag ]] || give_up "python-base-image.sh printed no tag"
log "engine ready; base image $tag ($(docker image inspect -f '{{.Size}}' "$tag" 2>/dev/null) bytes)"
echo "$tag"
