#!/usr/bin/env bash
# Base packages of the image. PostgreSQL and Redis are installed for review mode,
# where the agent runs its own instances under supervisord (50-units.sh disables
# the distro services).
# Inputs: UNIFIED_EXTRA_PACKAGES (space-separated, may be empty).
set -o errexit -o nounset -o pipefail

export DEBIAN_FRONTEND=noninteractive
# Ubuntu's needrestart would restart services mid-bake; listing them is enough.
export NEEDRESTART_MODE=l
apt_options=(--yes -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

# On first boot cloud-init may still be rewriting apt sources. Exit 2 means it
# finished with recoverable errors, which must not stop the bake.
if command -v cloud-init >/dev/null; then
  cloud-init status --wait >/dev/null || [ "$?" -eq 2 ]
fi

apt-get update
apt-get "${apt_options[@]}" upgrade

# shellcheck disable=SC2086 # UNIFIED_EXTRA_PACKAGES is a word list on purpose
apt-get "${apt_options[@]}" install --no-install-recommends \
  ca-certificates \
  git \
  postgresql \
  python3 \
  python3-venv \
  redis-server \
  ${UNIFIED_EXTRA_PACKAGES}

apt-get clean
