#!/usr/bin/env bash
# Remove the per-instance state the bake left behind, so every instance launched
# from the image starts as a first boot: new SSH host keys, a new machine-id, a
# fresh cloud-init run, no agent state. 90-validate.sh proves it worked.
# Inputs: IMAGE_ROOT (/ in the image; a scratch tree in tests),
#         UNIFIED_UPLOADS (space-separated paths of the build's uploads).
set -o errexit -o nounset -o pipefail

root="${IMAGE_ROOT%/}"

# shellcheck disable=SC2086 # UNIFIED_UPLOADS is a word list on purpose
for upload in ${UNIFIED_UPLOADS}; do
  rm -rf "${root}${upload}"
done

rm -f "${root}"/etc/ssh/ssh_host_*
rm -f "${root}"/root/.ssh/authorized_keys "${root}"/home/*/.ssh/authorized_keys
rm -f "${root}/var/lib/unified/state.json"
rm -rf "${root}/run/unified"

# Empty, not absent: systemd then generates a new id on first boot.
if [ -e "${root}/etc/machine-id" ]; then
  truncate --size 0 "${root}/etc/machine-id"
fi
if [ -f "${root}/var/lib/dbus/machine-id" ] && [ ! -L "${root}/var/lib/dbus/machine-id" ]; then
  rm -f "${root}/var/lib/dbus/machine-id"
fi

# What `cloud-init clean --logs` removes, without needing cloud-init on the host.
rm -rf "${root}/var/lib/cloud/instances" "${root}/var/lib/cloud/instance"
rm -f "${root}"/var/log/cloud-init*.log

rm -rf "${root}"/var/cache/apt/archives/*.deb
rm -f "${root}"/root/.bash_history "${root}"/home/*/.bash_history
