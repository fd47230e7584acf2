#!/usr/bin/env bash
# Base packages of the image. Redis is installed for review mode, where the agent runs
# its own instance under supervisord (50-units.sh disables the distro service);
# PostgreSQL comes next, at the version services.yaml pins (15-postgres.sh).
#
# A fresh Ubuntu instance is still busy with apt when SSH comes up: cloud-init may be
# rewriting the sources, and apt-daily / apt-daily-upgrade (unattended-upgrades) start
# on their timers at boot and hold dpkg's lock. So: wait for cloud-init, keep the apt
# timers from starting anything more during the build (this boot only: the image keeps
# them enabled), wait for any apt job already running, and give every apt-get a lock
# timeout on top, in case something takes the lock anyway.
# Inputs: UNIFIED_EXTRA_PACKAGES (space-separated, may be empty).
set -o errexit -o nounset -o pipefail

export DEBIAN_FRONTEND=noninteractive
# Ubuntu's needrestart would restart services mid-bake; listing them is enough.
export NEEDRESTART_MODE=l
# Every apt-get waits up to 300 s for dpkg's lock instead of failing at once.
apt_get=(apt-get -o DPkg::Lock::Timeout=300)
install_options=(--yes -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

# Exit 2 means cloud-init finished with recoverable errors, which must not stop the bake.
if command -v cloud-init >/dev/null; then
  cloud-init status --wait >/dev/null || [ "$?" -eq 2 ]
fi

# Only where systemd runs (sd_booted): chroot-style builds have no apt timers to wait on.
if systemd-notify --booted; then
  apt_jobs="apt-daily.service apt-daily-upgrade.service"
  for timer in apt-daily.timer apt-daily-upgrade.timer; do
    if [ -n "$(systemctl list-unit-files --no-legend "${timer}")" ]; then
      systemctl stop "${timer}"
    fi
  done
  # A transient unit ordered after the apt jobs starts only once they have finished
  # (at once if none is queued or running).
  echo "10-packages: waiting for ${apt_jobs} to finish"
  if ! timeout 900 systemd-run --quiet --wait --collect \
    --property="After=${apt_jobs}" /bin/true; then
    echo "10-packages: ${apt_jobs} still running after 900 s; relying on the dpkg lock timeout" >&2
  fi
fi

"${apt_get[@]}" update
"${apt_get[@]}" "${install_options[@]}" upgrade

# shellcheck disable=SC2086 # UNIFIED_EXTRA_PACKAGES is a word list on purpose
"${apt_get[@]}" "${install_options[@]}" install --no-install-recommends \
  ca-certificates \
  git \
  python3 \
  python3-venv \
  redis-server \
  ${UNIFIED_EXTRA_PACKAGES}

"${apt_get[@]}" clean
