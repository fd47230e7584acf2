#!/usr/bin/env bash
# Runs on the build host, after the amazon-ebs build (shell-local post-processor):
# tags every AMI of this Packer run, in every region, and their snapshots with the
# commits that `agent bake` resolved, read from the image's own manifest:
#   unified:commit:<repo> = <40-hex sha>   (one per repo)
#   unified:services-digest, unified:agent-version, unified:baked-at
# The fleet tool reads these tags; they are the same on every copy of the image.
# Needs python3 and the aws CLI; honours AWS_ENDPOINT_URL like the builder does.
# Inputs: PACKER_MANIFEST (the manifest post-processor's output),
#         IMAGE_MANIFEST (srv/unified/manifest.json downloaded from the image),
#         PACKER_RUN_UUID (set by Packer).
set -o errexit -o nounset -o pipefail

workdir="$(mktemp -d)"
trap 'rm -rf "${workdir}"' EXIT

# One line per AMI ("region ami-id") and the tags as aws CLI JSON in tags.json.
python3 - "${PACKER_MANIFEST}" "${IMAGE_MANIFEST}" "${PACKER_RUN_UUID}" "${workdir}/tags.json" \
  >"${workdir}/amis" <<'PY'
import json
import re
import sys

packer_manifest, image_manifest, run_uuid, tags_out = sys.argv[1:]
MAX_TAGS = 50  # EC2's limit per resource
SHA = re.compile(r"^[0-9a-f]{40}$")

with open(packer_manifest, encoding="utf-8") as f:
    builds = json.load(f)["builds"]
ours = [b for b in builds
        if b["packer_run_uuid"] == run_uuid and b["builder_type"] == "amazon-ebs"]
if not ours:
    sys.exit(f"tag-ami: no amazon-ebs build of run {run_uuid} in {packer_manifest}")

with open(image_manifest, encoding="utf-8") as f:
    image = json.load(f)
tags = {
    "unified:services-digest": image["services_digest"],
    "unified:agent-version": str(image["agent_version"]),
    "unified:baked-at": str(image["baked_at"]),
}
for repo in image["repos"]:
    if not SHA.match(repo["sha"]):
        sys.exit(f"tag-ami: {image_manifest}: repo {repo['repo']}: sha {repo['sha']!r} is not 40 hex digits")
    tags[f"unified:commit:{repo['repo']}"] = repo["sha"]
if len(tags) > MAX_TAGS - 10:  # leave room for the tags the builder set
    sys.exit(f"tag-ami: {len(tags)} tags would exceed EC2's {MAX_TAGS} per AMI; "
             "split the stack or move commits to a manifest object")
with open(tags_out, "w", encoding="utf-8") as f:
    json.dump([{"Key": k, "Value": v} for k, v in sorted(tags.items())], f)

for build in ours:
    for pair in build["artifact_id"].split(","):
        region, ami = pair.split(":", 1)
        print(region, ami)
PY

while read -r region ami; do
  resources=("${ami}")
  for snapshot in $(aws ec2 describe-images --region "${region}" --image-ids "${ami}" \
    --query 'Images[0].BlockDeviceMappings[].Ebs.SnapshotId' --output text); do
    case "${snapshot}" in snap-*) resources+=("${snapshot}") ;; esac
  done
  aws ec2 create-tags --region "${region}" --resources "${resources[@]}" \
    --tags "file://${workdir}/tags.json"
  echo "tag-ami: tagged ${region} ${resources[*]} with the commits of ${IMAGE_MANIFEST}"
done <"${workdir}/amis"
