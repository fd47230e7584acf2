# Example values for a real bake (packer build -var-file=packer/example.pkrvars.hcl ...).
# Paths are relative to the directory packer runs in: the repository root.
region           = "us-east-1"
ami_regions      = ["us-west-2"]
ami_name_prefix  = "unified"
instance_type    = "t3.large"
volume_size      = 20
subnet_id        = "subnet-0123456789abcdef0"
ssh_username     = "ubuntu"
ssh_source_cidrs = ["203.0.113.0/24"]

# Snapshots encrypted (the default) with a customer managed key in each region.
encrypted = true
kms_key_id = {
  "us-east-1" = "alias/unified-ami"
  "us-west-2" = "alias/unified-ami"
}

services_file  = "services.yaml"
agent_dist     = "dist/unified_image_agent-0.1.0-py3-none-any.whl"
agent_bin      = ".venv/bin/agent"
units_dir      = "units"
bake_jobs      = 4
extra_packages = ["build-essential", "libpq-dev"]

ami_tags = {
  team = "platform"
}
