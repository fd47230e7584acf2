# The unified image: Ubuntu 24.04 LTS + the agent in its venv + every repo of
# services.yaml baked at its ref + the systemd units that run `agent boot` at boot.
#
# How the AMI gets the commits it holds
# -------------------------------------
# The commit SHAs exist only once `agent bake` has run inside the build, but every
# HCL expression (tags, locals, the manifest post-processor's custom_data) is
# evaluated before the builder instance even starts, so none of them can carry the
# SHAs. Resolving them up front with `git ls-remote` would race with pushes to the
# refs being baked. Instead:
#   1. the build downloads the image's own manifest (/srv/unified/manifest.json,
#      written by `agent bake`) to <output_dir>/image-manifest.json;
#   2. the `manifest` post-processor records the AMI id(s) in
#      <output_dir>/packer-manifest.json;
#   3. the chained `shell-local` post-processor runs scripts/tag-ami.sh, which
#      reads both files and calls `aws ec2 create-tags` on every AMI of this run
#      (and its snapshots) with one `unified:commit:<repo>` tag per repo.
# This works the same with Packer 1.6.6 and current Packer. If tagging fails the
# build fails, so an untagged AMI is never reported as a success.

locals {
  timestamp  = formatdate("YYYYMMDD-hhmmss", timestamp())
  ami_name   = "${var.ami_name_prefix}-${local.timestamp}"
  output_dir = var.output_dir != "" ? var.output_dir : "${path.root}/output"
  scripts    = "${path.root}/scripts"

  # Where the uploads land on the builder instance; 80-cleanup.sh removes upload_dir.
  upload_dir        = "/tmp/unified-upload"
  upload_agent_dist = "${local.upload_dir}/${basename(var.agent_dist)}"
  upload_services   = "${local.upload_dir}/services.yaml"
  upload_units      = "${local.upload_dir}/units"

  image_tags = merge(var.ami_tags, {
    Name                      = local.ami_name
    "unified:image"           = var.ami_name_prefix
    "unified:source-ami"      = "{{ .SourceAMI }}"
    "unified:source-ami-name" = "{{ .SourceAMIName }}"
  })
}

source "amazon-ebs" "unified" {
  region          = var.region
  ami_regions     = var.ami_regions
  ami_name        = local.ami_name
  ami_description = "Unified image ${local.ami_name}: every repo of services.yaml at its pinned ref, plus the unified agent"
  instance_type   = var.instance_type
  subnet_id       = var.subnet_id

  source_ami_filter {
    filters = {
      name                = var.source_ami_name
      architecture        = "x86_64"
      root-device-type    = "ebs"
      virtualization-type = "hvm"
    }
    owners      = [var.source_ami_owner]
    most_recent = true
  }

  launch_block_device_mappings {
    device_name           = "/dev/sda1"
    volume_size           = var.volume_size
    volume_type           = "gp3"
    iops                  = 3000
    throughput            = 125
    delete_on_termination = true
  }

  # Instances launched from the AMI accept only IMDSv2, and the builder itself runs
  # with the same settings the agent relies on (tokens required, tags in IMDS).
  imds_support = "v2.0"
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "enabled"
  }

  ssh_username                          = var.ssh_username
  ssh_keypair_name                      = var.ssh_keypair_name
  ssh_private_key_file                  = var.ssh_private_key_file
  ssh_host                              = var.ssh_host
  ssh_port                              = var.ssh_port
  temporary_security_group_source_cidrs = var.ssh_source_cidrs
  custom_endpoint_ec2                   = var.ec2_endpoint
  skip_credential_validation            = var.skip_credential_validation

  tags          = local.image_tags
  snapshot_tags = local.image_tags
  run_tags = {
    Name           = "packer-builder ${local.ami_name}"
    "unified:role" = "image-builder"
  }
}

build {
  sources = ["source.amazon-ebs.unified"]

  # The file provisioner needs its destination directories to exist: a directory
  # upload into a missing one flattens subdirectories (hashicorp/packer#3719).
  provisioner "shell" {
    inline = ["mkdir -p ${local.upload_units}"]
  }

  provisioner "file" {
    source      = var.agent_dist
    destination = local.upload_agent_dist
  }

  provisioner "file" {
    source      = var.services_file
    destination = local.upload_services
  }

  # Trailing slash: upload the contents of units/ into upload_units.
  provisioner "file" {
    source      = "${var.units_dir}/"
    destination = local.upload_units
  }

  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    environment_vars = [
      "UNIFIED_EXTRA_PACKAGES=${join(" ", var.extra_packages)}",
      "UNIFIED_USER=unified",
      "UNIFIED_AGENT_DIST=${local.upload_agent_dist}",
      "UNIFIED_SERVICES_SRC=${local.upload_services}",
    ]
    scripts = [
      "${local.scripts}/10-packages.sh",
      "${local.scripts}/20-user.sh",
      "${local.scripts}/30-agent.sh",
    ]
  }

  # The same script as the local build, pointed at the image's root.
  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    environment_vars = [
      "UNIFIED_AGENT=/opt/unified/venv/bin/agent",
      "UNIFIED_ROOT=/",
      "UNIFIED_SERVICES=/etc/unified/services.yaml",
      "UNIFIED_BAKE_JOBS=${var.bake_jobs}",
    ]
    script = "${local.scripts}/40-bake.sh"
  }

  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    environment_vars = [
      "UNIFIED_UNITS_SRC=${local.upload_units}",
    ]
    script = "${local.scripts}/50-units.sh"
  }

  provisioner "file" {
    direction   = "download"
    source      = "/srv/unified/manifest.json"
    destination = "${local.output_dir}/image-manifest.json"
  }

  # Cleanup removes per-instance state; validate proves it is gone (and fails the
  # build otherwise). IMAGE_ROOT lets tests run both against a scratch tree.
  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    environment_vars = [
      "IMAGE_ROOT=/",
      "UNIFIED_UPLOADS=${local.upload_dir}",
    ]
    scripts = [
      "${local.scripts}/80-cleanup.sh",
      "${local.scripts}/90-validate.sh",
    ]
  }

  post-processors {
    post-processor "manifest" {
      output     = "${local.output_dir}/packer-manifest.json"
      strip_path = true
      custom_data = {
        ami_name      = local.ami_name
        services_file = var.services_file
        agent_dist    = basename(var.agent_dist)
      }
    }

    post-processor "shell-local" {
      environment_vars = [
        "PACKER_MANIFEST=${local.output_dir}/packer-manifest.json",
        "IMAGE_MANIFEST=${local.output_dir}/image-manifest.json",
      ]
      script = "${local.scripts}/tag-ami.sh"
    }
  }
}
