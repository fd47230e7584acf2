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
#
# Where the code comes from
# -------------------------
# The repos are fetched on the build host (scripts/fetch-repos.sh, a shell-local
# step), with its git credentials, and uploaded as one tarball of checkouts; the
# builder only builds them (scripts/40-bake.sh). No credential, SSH key or
# known_hosts entry ever reaches the instance, and relative repo URLs resolve
# against services.yaml on the build host. See packer/README.md.

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
  upload_repos      = "${local.upload_dir}/repos.tar.gz"
  upload_pgdg_key   = "${local.upload_dir}/apt.postgresql.org.asc"
  upload_docs       = "${local.upload_dir}/doc"

  # Written on the build host by scripts/fetch-repos.sh during the build.
  repos_tarball = "${local.output_dir}/repos.tar.gz"

  # services.yaml, read here on the build host: the PostgreSQL major it pins goes to
  # scripts/15-postgres.sh ("" when it pins none).
  services         = yamldecode(file(abspath(var.services_file)))
  postgres_version = try(tostring(local.services.databases.postgres.version), "")

  # Per-region KMS keys: the build region's encrypts the builder's volume and the AMI,
  # each of ami_regions' its copy; "" means the account's default EBS key there. A key
  # given with encrypted = false reaches Packer, which refuses the contradiction.
  build_kms_key_id = lookup(var.kms_key_id, var.region, "")
  region_kms_key_ids = {
    for region in var.ami_regions : region => lookup(var.kms_key_id, region, "")
    if var.encrypted || lookup(var.kms_key_id, region, "") != ""
  }

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
    encrypted             = var.encrypted
    kms_key_id            = local.build_kms_key_id
  }

  # The AMI's snapshots are encrypted in every region, with that region's key from
  # var.kms_key_id. encrypt_boot makes Packer image the builder into a temporary
  # AMI and copy it encrypted (one extra copy); the temporary one is deregistered.
  encrypt_boot       = var.encrypted
  kms_key_id         = local.build_kms_key_id
  region_kms_key_ids = local.region_kms_key_ids

  # Instances launched from the AMI accept only IMDSv2, and the builder itself runs
  # with the same settings the agent relies on (tokens required, tags in IMDS).
  imds_support = "v2.0"
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "enabled"
  }

  ssh_username         = var.ssh_username
  ssh_keypair_name     = var.ssh_keypair_name
  ssh_private_key_file = var.ssh_private_key_file
  ssh_host             = var.ssh_host
  ssh_port             = var.ssh_port

  # SSH to the builder is open to ssh_source_cidrs, or when that is empty to this build
  # host's public address only (current Packer), never to 0.0.0.0/0.
  temporary_security_group_source_cidrs = var.ssh_source_cidrs
  # (On its own line: compat-1.6.sh removes it, Packer 1.6.6 does not know it.)
  temporary_security_group_source_public_ip = true

  custom_endpoint_ec2        = var.ec2_endpoint
  skip_credential_validation = var.skip_credential_validation

  tags          = local.image_tags
  snapshot_tags = local.image_tags
  # iam-policy.json lets Packer stop, terminate, deregister and delete only what carries
  # unified:role = image-builder: the builder instance and its volumes, the temporary
  # key pair and security group, and (current plugins tag them with run_tags when they
  # are created) the AMIs and snapshots of the build.
  run_tags = {
    Name           = "packer-builder ${local.ami_name}"
    "unified:role" = "image-builder"
  }
  run_volume_tags = {
    Name           = "packer-builder ${local.ami_name}"
    "unified:role" = "image-builder"
  }
}

build {
  sources = ["source.amazon-ebs.unified"]

  # First, on the build host: every repo at its ref, fetched with this host's git
  # credentials into one tarball of checkouts (see the comment at the top).
  provisioner "shell-local" {
    environment_vars = [
      "UNIFIED_AGENT=${var.agent_bin}",
      "UNIFIED_SERVICES=${var.services_file}",
      "UNIFIED_BAKE_JOBS=${var.bake_jobs}",
      "UNIFIED_REPOS_TARBALL=${local.repos_tarball}",
    ]
    script = "${local.scripts}/fetch-repos.sh"
  }

  # The file provisioner needs its destination directories to exist: a directory
  # upload into a missing one flattens subdirectories (hashicorp/packer#3719).
  provisioner "shell" {
    inline = ["mkdir -p ${local.upload_units} ${local.upload_docs}/docs"]
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

  # Made by fetch-repos.sh above, so it exists only once the build runs.
  provisioner "file" {
    source      = local.repos_tarball
    destination = local.upload_repos
    generated   = true
  }

  provisioner "file" {
    source      = "${path.root}/keys/apt.postgresql.org.asc"
    destination = local.upload_pgdg_key
  }

  provisioner "file" {
    source      = var.readme_file
    destination = "${local.upload_docs}/README.md"
  }

  provisioner "file" {
    source      = "${var.docs_dir}/"
    destination = "${local.upload_docs}/docs"
  }

  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    environment_vars = [
      "IMAGE_ROOT=/",
      "UNIFIED_EXTRA_PACKAGES=${join(" ", var.extra_packages)}",
      "UNIFIED_POSTGRES_VERSION=${local.postgres_version}",
      "UNIFIED_PGDG_KEY=${local.upload_pgdg_key}",
      "UNIFIED_USER=unified",
      "UNIFIED_AGENT_DIST=${local.upload_agent_dist}",
      "UNIFIED_SERVICES_SRC=${local.upload_services}",
    ]
    scripts = [
      "${local.scripts}/10-packages.sh",
      "${local.scripts}/15-postgres.sh",
      "${local.scripts}/20-user.sh",
      "${local.scripts}/30-agent.sh",
    ]
  }

  # The same script as the local build, pointed at the image's root, building the
  # checkouts fetched on the build host (git does not reach the network here).
  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    environment_vars = [
      "UNIFIED_AGENT=/opt/unified/venv/bin/agent",
      "UNIFIED_ROOT=/",
      "UNIFIED_SERVICES=/etc/unified/services.yaml",
      "UNIFIED_BAKE_JOBS=${var.bake_jobs}",
      "UNIFIED_REPOS_TARBALL=${local.upload_repos}",
    ]
    script = "${local.scripts}/40-bake.sh"
  }

  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    environment_vars = [
      "IMAGE_ROOT=/",
      "UNIFIED_UNITS_SRC=${local.upload_units}",
      "UNIFIED_DOCS_SRC=${local.upload_docs}",
    ]
    scripts = [
      "${local.scripts}/50-units.sh",
      "${local.scripts}/55-docs.sh",
    ]
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
