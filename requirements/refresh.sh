#!/bin/sh
# Regenerate requirements/lock.txt from pyproject.toml (every runtime extra),
# requirements/build.in (the build backend) and requirements/dev-image.in (the
# reloader of development images). The Dockerfile installs with this file as
# pip constraints, so only the packages an image needs are installed, each at
# its locked version.
#
#   requirements/refresh.sh                          keep current pins, add what is new
#   requirements/refresh.sh --upgrade                move every pin to the newest release
#   requirements/refresh.sh --upgrade-package aiohttp   move one pin
#
# Needs uv on PATH (python3 -m pip install uv). The lock is universal (markers
# for every platform) so arm64 and amd64 images install the same versions.
set -eu
cd "$(dirname "$0")/.."
if ! command -v uv >/dev/null 2>&1; then
  echo "refresh.sh: uv is not installed; run: python3 -m pip install uv" >&2
  exit 1
fi
exec uv pip compile pyproject.toml requirements/build.in requirements/dev-image.in \
  --extra all --universal --python-version 3.11 \
  --annotation-style line \
  --custom-compile-command "requirements/refresh.sh" \
  --output-file requirements/lock.txt "$@"
