#!/usr/bin/env bash
# Bake every repo of services.yaml under a root: shared by the image build
# (root /, the agent from its venv) and the local build (a scratch root, the agent
# on PATH). Fails unless agent bake leaves its manifest behind.
# Inputs: UNIFIED_AGENT, UNIFIED_ROOT, UNIFIED_SERVICES, UNIFIED_BAKE_JOBS.
set -o errexit -o nounset -o pipefail

if [ -z "${UNIFIED_ROOT}" ]; then
  echo "40-bake: UNIFIED_ROOT is empty" >&2
  exit 1
fi

# The services user must be able to read the checkouts.
umask 022
mkdir -p "${UNIFIED_ROOT}"

"${UNIFIED_AGENT}" bake \
  --root "${UNIFIED_ROOT}" \
  --services "${UNIFIED_SERVICES}" \
  --jobs "${UNIFIED_BAKE_JOBS}"

manifest="${UNIFIED_ROOT%/}/srv/unified/manifest.json"
if [ ! -s "${manifest}" ]; then
  echo "40-bake: agent bake exited 0 but wrote no manifest at ${manifest}" >&2
  exit 1
fi
echo "40-bake: manifest ${manifest}:"
cat "${manifest}"
