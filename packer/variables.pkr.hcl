# Inputs of both builds. Every default is safe for a real bake in AWS; the
# connection overrides at the bottom exist for VPC endpoints, bastions and the
# moto-backed integration test (packer/test/moto.pkrvars.hcl).

# --- What goes into the image -------------------------------------------------

variable "services_file" {
  type        = string
  description = "services.yaml declaring the stack: every repo in it is baked at its ref."
  default     = "services.yaml"
}

variable "agent_dist" {
  type        = string
  description = "Built wheel or sdist of the agent (python -m build --outdir dist/). Required by the amazon-ebs build; the file name carries the version, so there is no default."
  default     = ""
}

variable "agent_bin" {
  type        = string
  description = "The agent on the build host: the image build fetches the repos with it (git runs here, with this host's credentials), the local build bakes with it."
  default     = "agent"
}

variable "units_dir" {
  type        = string
  description = "The repo's units/ directory; units/systemd/*.service are installed and enabled in the image."
  default     = "units"
}

variable "readme_file" {
  type        = string
  description = "The README installed as /usr/share/doc/unified/README.md, where the systemd units' Documentation= points."
  default     = "README.md"
}

variable "docs_dir" {
  type        = string
  description = "Directory installed as /usr/share/doc/unified/docs/ (reliability, IAM, benchmarks)."
  default     = "docs"
}

variable "bake_jobs" {
  type        = number
  description = "Repos that agent bake fetches (on the build host) and builds (in the image) in parallel."
  default     = 4
}

variable "extra_packages" {
  type        = list(string)
  description = "Debian packages the repos' builds need beyond the base set in scripts/10-packages.sh (compilers, libpq-dev, ...)."
  default     = []
}

# --- The AMI -------------------------------------------------------------------

variable "region" {
  type        = string
  description = "Region the builder instance runs in and the AMI is registered in."
  default     = "us-east-1"
}

variable "ami_regions" {
  type        = list(string)
  description = "Extra regions the finished AMI is copied to (each copy gets the same commit tags)."
  default     = []
}

variable "ami_name_prefix" {
  type        = string
  description = "AMI names are <prefix>-<UTC timestamp>."
  default     = "unified"
}

variable "ami_tags" {
  type        = map(string)
  description = "Extra tags on the AMI and its snapshots (team, cost centre, ...). The commit tags are added after the bake by scripts/tag-ami.sh."
  default     = {}
}

variable "encrypted" {
  type        = bool
  description = "Encrypt the builder's volume and the AMI's snapshots in every region (encrypt_boot). Off only for an account that shares AMIs where encrypted snapshots cannot go."
  default     = true
}

variable "kms_key_id" {
  type        = map(string)
  description = "KMS key (id, alias or ARN) per region, for the build region and each of ami_regions: { \"us-east-1\" = \"alias/unified-ami\" }. A region missing from the map uses the account's default EBS key there (aws/ebs), which cannot be shared with other accounts."
  default     = {}
}

variable "source_ami_name" {
  type        = string
  description = "Name filter for the base image: Ubuntu 24.04 LTS server, amd64, gp3."
  default     = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"
}

variable "source_ami_owner" {
  type        = string
  description = "Owner of the base image: Canonical."
  default     = "099720109477"
}

variable "instance_type" {
  type        = string
  description = "Builder instance type; the repos' builds run on it."
  default     = "t3.large"
}

variable "volume_size" {
  type        = number
  description = "Root volume size in GiB (gp3)."
  default     = 20
}

variable "subnet_id" {
  type        = string
  description = "Subnet for the builder instance; empty lets AWS pick one in the default VPC."
  default     = ""
}

variable "ssh_source_cidrs" {
  type        = list(string)
  description = "CIDRs the builder's temporary security group admits on SSH. Empty (the default) admits only this build host's public address, as https://checkip.amazonaws.com sees it; list the CI runners' egress or the VPC's CIDRs when that is not the address the builder sees (NAT, private subnets, ssh_interface = private_ip)."
  default     = []

  validation {
    condition     = length(setintersection(var.ssh_source_cidrs, ["0.0.0.0/0", "::/0"])) == 0
    error_message = "The ssh_source_cidrs value must not hold 0.0.0.0/0 or ::/0: that opens the builder's SSH to the whole Internet. Leave it empty for this host's public address, or list the CI runners' egress CIDRs."
  }
}

variable "ssh_username" {
  type        = string
  description = "Login user of the base image."
  default     = "ubuntu"
}

variable "output_dir" {
  type        = string
  description = "Build host directory for packer-manifest.json, the downloaded image manifest and the local bake root; empty means packer/output."
  default     = ""
}

# --- Local build (null.local) ------------------------------------------------------

variable "bake_root" {
  type        = string
  description = "Root directory for the local bake (agent bake --root); empty means <output_dir>/bake-root."
  default     = ""
}

# --- Connection overrides (defaults = the plugin's own defaults) ------------------

variable "ec2_endpoint" {
  type        = string
  description = "EC2 API endpoint; empty means AWS's. Defaults to $AWS_ENDPOINT_URL, the variable boto3 and the aws CLI honour, so the builder and scripts/tag-ami.sh talk to the same endpoint."
  default     = env("AWS_ENDPOINT_URL")
}

variable "skip_credential_validation" {
  type        = bool
  description = "Skip the STS check of the credentials before the build (needed when STS is not reachable, as with a test EC2 endpoint)."
  default     = false
}

variable "ssh_keypair_name" {
  type        = string
  description = "Existing EC2 key pair to launch with; empty makes Packer create and delete a temporary one."
  default     = ""
}

variable "ssh_private_key_file" {
  type        = string
  description = "Private key of ssh_keypair_name; only with ssh_keypair_name."
  default     = ""
}

variable "ssh_host" {
  type        = string
  description = "Address to SSH to instead of the instance's own; empty means the instance's IP."
  default     = ""
}

variable "ssh_port" {
  type        = number
  description = "SSH port."
  default     = 22
}
