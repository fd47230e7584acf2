#!/usr/bin/env bash
# PostgreSQL at the major version services.yaml pins (databases.postgres.version, read
# on the build host and passed in): the distro's package when the distro has that
# major, else the one from PostgreSQL's own repository, apt.postgresql.org (PGDG),
# signed by the key kept in packer/keys (its SHA-256 is checked here, its fingerprint by
# the tests). Ubuntu 24.04 ships 16 only, so a pin of 15 comes from PGDG there. No pin:
# the distro's default major. A pin that neither source has, a PGDG that cannot be
# read, or an install that leaves the pinned major missing fails the build and says
# what to change.
# Inputs: UNIFIED_POSTGRES_VERSION (a major version such as 15, or empty),
#         UNIFIED_PGDG_KEY (the uploaded packer/keys/apt.postgresql.org.asc),
#         IMAGE_ROOT (/ in the image; a scratch tree in tests, which stub apt).
set -o errexit -o nounset -o pipefail

root="${IMAGE_ROOT%/}"
version="${UNIFIED_POSTGRES_VERSION}"
# packer/keys/apt.postgresql.org.asc: PostgreSQL Debian Repository, fingerprint
# B97B 0AFC AA1A 47F0 44F2  44A0 7FCC 7D46 ACCC 4CF8.
pgdg_key_sha256=0144068502a1eddd2a0280ede10ef607d1ec592ce819940991203941564e8e76
pgdg_url=https://apt.postgresql.org/pub/repos/apt

export DEBIAN_FRONTEND=noninteractive
export NEEDRESTART_MODE=l
apt_get=(apt-get -o DPkg::Lock::Timeout=300)
install_options=(--yes -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

fail() {
  echo "15-postgres: $*" >&2
  exit 1
}

# The version apt would install of package $1; empty when no source has it.
candidate() {
  apt-cache policy "$1" | awk '$1 == "Candidate:" && $2 != "(none)" { print $2 }'
}

# shellcheck source=/dev/null # the image's own os-release
. "${root}/etc/os-release"
codename="${VERSION_CODENAME:-}"
distro="${ID:-this distribution} ${codename}"

if [ -z "${version}" ]; then
  echo "15-postgres: services.yaml pins no PostgreSQL version: ${distro}'s default"
  "${apt_get[@]}" "${install_options[@]}" install --no-install-recommends postgresql
  "${apt_get[@]}" clean
  exit 0
fi
if ! [[ "${version}" =~ ^[0-9]{1,2}$ ]]; then
  fail "databases.postgres.version is '${version}': expected a major version such as 15"
fi

package="postgresql-${version}"
# The major of the distro's "postgresql" dependency package: 16 for 16+257build1.
shipped="$(candidate postgresql | sed -E 's/^([0-9]+:)?([0-9]+).*/\2/')"
shipped="${shipped:-no PostgreSQL}"

if [ -n "$(candidate "${package}")" ]; then
  origin="${distro}"
else
  echo "15-postgres: ${distro} has no ${package} (it ships PostgreSQL ${shipped}); adding ${pgdg_url}"
  if [ -z "${codename}" ]; then
    fail "no VERSION_CODENAME in /etc/os-release: cannot pick the apt.postgresql.org suite"
  fi
  if ! echo "${pgdg_key_sha256}  ${UNIFIED_PGDG_KEY}" | sha256sum --check --status; then
    fail "${UNIFIED_PGDG_KEY} is not the apt.postgresql.org key this script pins (sha256 ${pgdg_key_sha256})"
  fi
  install -d -m 0755 "${root}/etc/apt/keyrings" "${root}/etc/apt/sources.list.d"
  install -m 0644 "${UNIFIED_PGDG_KEY}" "${root}/etc/apt/keyrings/apt.postgresql.org.asc"
  cat >"${root}/etc/apt/sources.list.d/pgdg.sources" <<SOURCES
Types: deb
URIs: ${pgdg_url}
Suites: ${codename}-pgdg
Components: main
Signed-By: /etc/apt/keyrings/apt.postgresql.org.asc
SOURCES
  if ! "${apt_get[@]}" update; then
    fail "cannot read ${pgdg_url} (apt's errors above): services.yaml pins PostgreSQL ${version}" \
      "(databases.postgres.version) and ${distro} ships ${shipped}; let the builder reach" \
      "apt.postgresql.org, or pin databases.postgres.version: ${shipped}"
  fi
  if [ -z "$(candidate "${package}")" ]; then
    fail "services.yaml pins PostgreSQL ${version} (databases.postgres.version), but neither" \
      "${distro} (PostgreSQL ${shipped}) nor apt.postgresql.org (${codename}-pgdg) has ${package};" \
      "pin a version one of them has"
  fi
  origin="apt.postgresql.org"
fi

echo "15-postgres: ${package} $(candidate "${package}") from ${origin}"
"${apt_get[@]}" "${install_options[@]}" install --no-install-recommends "${package}"
"${apt_get[@]}" clean

# The agent runs /usr/lib/postgresql/<pin>/bin/postgres: prove it is there.
if [ ! -x "${root}/usr/lib/postgresql/${version}/bin/postgres" ]; then
  installed="$(find "${root}/usr/lib/postgresql" -mindepth 1 -maxdepth 1 -printf '%f ' 2>/dev/null || true)"
  fail "services.yaml pins PostgreSQL ${version} (databases.postgres.version), but the image" \
    "has ${installed:-no PostgreSQL} under /usr/lib/postgresql after installing ${package}"
fi
