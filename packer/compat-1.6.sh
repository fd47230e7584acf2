#!/usr/bin/env bash
# compat-1.6.sh SRC_DIR DEST_DIR
#
# Copy the templates in SRC_DIR (packer/) to DEST_DIR for Debian's Packer 1.6.6,
# removing exactly the four things 1.6.6 does not know, and nothing else:
#   1. plugins.pkr.hcl, the file that holds only the `packer { required_plugins }`
#      block (1.6.6 has the amazon builder built in);
#   2. the `metadata_options { ... }` block of the amazon-ebs source;
#   3. the `imds_support = ...` line of the amazon-ebs source;
#   4. the `temporary_security_group_source_public_ip = ...` line of the amazon-ebs
#      source (1.6.6 then opens SSH to ssh_source_cidrs, or to 0.0.0.0/0 when that
#      is empty: the tests set it to 127.0.0.1/32).
# The scripts and var files are copied unchanged, so `packer validate` and
# `packer build` of DEST_DIR behave like current Packer on SRC_DIR, minus IMDS
# settings on the builder instance. Fails if any of the four is left in the copy.
set -o errexit -o nounset -o pipefail

if [ "$#" -ne 2 ]; then
  echo "usage: $0 SRC_DIR DEST_DIR" >&2
  exit 2
fi
src="$1"
dest="$2"

mkdir -p "${dest}"
cp -R "${src}/." "${dest}/"
rm -rf "${dest}/output"

rm -f "${dest}/plugins.pkr.hcl"
# metadata_options holds only attributes, so its block ends at the first line that
# is a lone closing brace.
sed -i \
  -e '/^[[:space:]]*metadata_options[[:space:]]*{[[:space:]]*$/,/^[[:space:]]*}[[:space:]]*$/d' \
  -e '/^[[:space:]]*imds_support[[:space:]]*=/d' \
  -e '/^[[:space:]]*temporary_security_group_source_public_ip[[:space:]]*=/d' \
  "${dest}"/*.pkr.hcl

if grep -n -E 'required_plugins|metadata_options|imds_support|temporary_security_group_source_public_ip' \
  "${dest}"/*.pkr.hcl; then
  echo "compat-1.6: the lines above are still in ${dest}: the templates changed shape, update $0" >&2
  exit 1
fi
