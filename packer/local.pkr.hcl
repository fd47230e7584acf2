# The local build: the same bake as the image, into a scratch root on this machine,
# with the agent on PATH (or var.agent_bin). No cloud, no SSH:
#
#   packer build -only=null.local -var bake_root=/tmp/root -var services_file=services.yaml packer/
#
# The manifest lands at <bake_root>/srv/unified/manifest.json.

locals {
  bake_root = var.bake_root != "" ? var.bake_root : "${local.output_dir}/bake-root"
}

source "null" "local" {
  communicator = "none"
}

build {
  sources = ["source.null.local"]

  provisioner "shell-local" {
    environment_vars = [
      "UNIFIED_AGENT=${var.agent_bin}",
      "UNIFIED_ROOT=${local.bake_root}",
      "UNIFIED_SERVICES=${var.services_file}",
      "UNIFIED_BAKE_JOBS=${var.bake_jobs}",
      "UNIFIED_REPOS_TARBALL=",
    ]
    script = "${local.scripts}/40-bake.sh"
  }
}
