#!/usr/bin/env bash
# Runs on the build host (shell-local), first in the image build: fetches every repo of
# services.yaml at its ref, and packs the checkouts into one tarball the build uploads
# into the image, where 40-bake.sh builds them without git touching the network.
#
# Fetching here, not on the builder instance, is what lets private repos work with no
# credential ever in the image: git runs as the operator (or CI job) with its own SSH
# agent, known_hosts and credential helpers, and relative repo URLs resolve against
# services.yaml's folder on this machine, where the operator meant them. The tarball
# holds the checkouts only: working tree and .git with its history and origin URL (the
# agent refuses URLs that carry a password); the reflogs (which name this machine's git
# user) and hooks (git's samples, or this user's template) are left out.
# Inputs: UNIFIED_AGENT (the agent on this machine), UNIFIED_SERVICES,
#         UNIFIED_BAKE_JOBS, UNIFIED_REPOS_TARBALL (the tarball to write).
set -o errexit -o nounset -o pipefail

staging="$(mktemp -d "${TMPDIR:-/tmp}/unified-fetch.XXXXXX")"
trap 'rm -rf "${staging}"' EXIT

# The agent's fetch step only: clone, check out each ref, no build.
"${UNIFIED_AGENT}" bake --steps fetch \
  --root "${staging}" \
  --services "${UNIFIED_SERVICES}" \
  --jobs "${UNIFIED_BAKE_JOBS}"

repos="${staging}/srv/unified/repos"
for git_dir in "${repos}"/*/.git; do
  rm -rf "${git_dir}/logs" "${git_dir}/hooks"
done

mkdir -p "$(dirname "${UNIFIED_REPOS_TARBALL}")"
tar --create --gzip --file "${UNIFIED_REPOS_TARBALL}.partial" --directory "${repos}" .
mv "${UNIFIED_REPOS_TARBALL}.partial" "${UNIFIED_REPOS_TARBALL}"
echo "fetch-repos: $(du -h "${UNIFIED_REPOS_TARBALL}" | cut -f1) of checkouts in ${UNIFIED_REPOS_TARBALL}"
