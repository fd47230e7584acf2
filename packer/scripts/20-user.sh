#!/usr/bin/env bash
# The unprivileged system user the services run as. It owns nothing but its home:
# the code under /srv/unified stays root-owned and read-only to the services.
# Inputs: UNIFIED_USER.
set -o errexit -o nounset -o pipefail

install -d -m 0755 -o root -g root /var/lib/unified

if ! getent passwd "${UNIFIED_USER}" >/dev/null; then
  useradd --system --user-group \
    --home-dir "/var/lib/unified/home" --create-home \
    --shell /usr/sbin/nologin \
    --comment "unified services" \
    "${UNIFIED_USER}"
fi

shell="$(getent passwd "${UNIFIED_USER}" | cut -d: -f7)"
if [ "${shell}" != /usr/sbin/nologin ]; then
  echo "20-user: ${UNIFIED_USER} has login shell ${shell}, want /usr/sbin/nologin" >&2
  exit 1
fi
