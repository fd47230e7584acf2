# Overrides for tests/integration/test_packer.py, which runs the amazon-ebs build
# against a moto server and a throwaway sshd on 127.0.0.1. The production template is
# unchanged: these only set variables whose defaults are the plugin's own.
#
# The test adds at run time: ssh_port, ssh_private_key_file (the key pair
# "unified-test" it imported into moto), agent_dist, services_file, units_dir,
# output_dir; and AWS_ENDPOINT_URL in the environment, which ec2_endpoint defaults to
# and the aws CLI in scripts/tag-ami.sh honours.
region        = "us-east-1"
instance_type = "t3.small"

# Current plugins check static credentials with STS GetCallerIdentity unless told not
# to, and custom_endpoint_ec2 does not redirect STS. (Packer 1.6.6 builds without it.)
skip_credential_validation = true

# Log in with the key pair the test imported, to the sshd, not the fake instance's IP.
ssh_keypair_name = "unified-test"
ssh_host         = "127.0.0.1"
ssh_username     = "root"
ssh_source_cidrs = ["127.0.0.1/32"]
