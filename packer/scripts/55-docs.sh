#!/usr/bin/env bash
# The documentation the systemd units point at (Documentation=file:///usr/share/doc/
# unified/...): the repository's README.md and docs/, uploaded by the build.
# Inputs: UNIFIED_DOCS_SRC (the uploaded directory: README.md, docs/),
#         IMAGE_ROOT (/ in the image; a scratch tree in tests).
set -o errexit -o nounset -o pipefail

root="${IMAGE_ROOT%/}"
doc_dir="${root}/usr/share/doc/unified"

if [ ! -f "${UNIFIED_DOCS_SRC}/README.md" ]; then
  echo "55-docs: no README.md in ${UNIFIED_DOCS_SRC}" >&2
  exit 1
fi
rm -rf "${doc_dir}"
install -d -m 0755 "${doc_dir}"
cp -R "${UNIFIED_DOCS_SRC}/." "${doc_dir}/"
chown -R root:root "${doc_dir}"
chmod -R u=rwX,go=rX "${doc_dir}"
echo "55-docs: $(find "${doc_dir}" -type f | wc -l) files in ${doc_dir#"${root}"}"
