#!/usr/bin/env bash
# Fail the build if per-instance state is baked into the image: every instance
# launched from it would share SSH host keys, a machine-id, cloud-init's record of
# having run, or the agent's state from the build instance.
# Inputs: IMAGE_ROOT (/ in the image; a scratch tree in tests).
set -o errexit -o nounset -o pipefail

root="${IMAGE_ROOT%/}"
problems=()

for path in "${root}"/etc/ssh/ssh_host_* \
  "${root}"/root/.ssh/authorized_keys "${root}"/home/*/.ssh/authorized_keys; do
  if [ -e "${path}" ]; then
    problems+=("${path}: per-instance SSH key baked in")
  fi
done

if [ -e "${root}/var/lib/unified/state.json" ]; then
  problems+=("${root}/var/lib/unified/state.json: agent state baked in")
fi
if [ -e "${root}/run/unified" ]; then
  problems+=("${root}/run/unified: agent runtime state baked in")
fi
if [ -s "${root}/etc/machine-id" ]; then
  problems+=("${root}/etc/machine-id: not empty, instances would share a machine-id")
fi
for path in "${root}/var/lib/cloud/instances" "${root}/var/lib/cloud/instance"; do
  if [ -e "${path}" ] || [ -L "${path}" ]; then
    problems+=("${path}: cloud-init would skip its first-boot run")
  fi
done

if [ "${#problems[@]}" -gt 0 ]; then
  printf '90-validate: %s\n' "${problems[@]}" >&2
  echo "90-validate: ${#problems[@]} problem(s); run 80-cleanup.sh before this step" >&2
  exit 1
fi
echo "90-validate: no per-instance state in ${IMAGE_ROOT}"
