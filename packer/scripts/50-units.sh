#!/usr/bin/env bash
# Install units/ at /opt/unified/units and its systemd units (unified-agent runs
# `agent boot` at boot, unified-watch runs `agent watch`), enabled but not started:
# nothing may run at bake time. The distro PostgreSQL and Redis services are
# disabled, since the agent supervises its own instances in review mode.
# Inputs: UNIFIED_UNITS_SRC (the uploaded units/ directory).
set -o errexit -o nounset -o pipefail

units_dir=/opt/unified/units

rm -rf "${units_dir}"
install -d -m 0755 "${units_dir}"
cp -R "${UNIFIED_UNITS_SRC}/." "${units_dir}/"
chown -R root:root "${units_dir}"
chmod -R u=rwX,go=rX "${units_dir}"

shopt -s nullglob
unit_files=("${units_dir}"/systemd/*.service)
if [ "${#unit_files[@]}" -eq 0 ]; then
  echo "50-units: no systemd units in ${UNIFIED_UNITS_SRC}/systemd/*.service" >&2
  exit 1
fi

names=()
for unit_file in "${unit_files[@]}"; do
  install -m 0644 -o root -g root "${unit_file}" /etc/systemd/system/
  names+=("$(basename "${unit_file}")")
done
systemctl enable "${names[@]}"
for name in "${names[@]}"; do
  systemctl is-enabled --quiet "${name}"
done

# Stop only where systemd runs (sd_booted): chroot-style builds have none.
for distro_service in postgresql.service redis-server.service; do
  if [ -n "$(systemctl list-unit-files --no-legend "${distro_service}")" ]; then
    systemctl disable "${distro_service}"
    if [ -d /run/systemd/system ]; then
      systemctl stop "${distro_service}"
    fi
  fi
done
