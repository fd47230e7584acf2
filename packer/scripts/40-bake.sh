#!/usr/bin/env bash
# Bake every repo of services.yaml under a root: shared by the image build (root /, the
# agent from its venv) and the local build (a scratch root, the agent on PATH). Fails
# unless agent bake leaves its manifest behind.
#
# The image build passes UNIFIED_REPOS_TARBALL, the checkouts fetch-repos.sh made on the
# build host: they are unpacked under the root and only built (agent bake --steps build),
# so git never reaches the network here and the builder needs no credential. Without
# it (the local build) the agent fetches and builds.
# Inputs: UNIFIED_AGENT, UNIFIED_ROOT, UNIFIED_SERVICES, UNIFIED_BAKE_JOBS,
#         UNIFIED_REPOS_TARBALL (may be empty).
set -o errexit -o nounset -o pipefail

if [ -z "${UNIFIED_ROOT}" ]; then
  echo "40-bake: UNIFIED_ROOT is empty" >&2
  exit 1
fi

# The services user must be able to read the checkouts.
umask 022
mkdir -p "${UNIFIED_ROOT}"

steps=all
if [ -n "${UNIFIED_REPOS_TARBALL}" ]; then
  repos="${UNIFIED_ROOT%/}/srv/unified/repos"
  rm -rf "${repos}"
  install -d -m 0755 "${repos}"
  # Owned by root whoever owned them on the build host; read-only to everyone else.
  tar --extract --gzip --file "${UNIFIED_REPOS_TARBALL}" --directory "${repos}" --no-same-owner
  chmod -R u+rwX,go+rX,go-w "${repos}"
  steps=build
fi

"${UNIFIED_AGENT}" bake --steps "${steps}" \
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
