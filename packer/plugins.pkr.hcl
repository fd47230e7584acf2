# Plugins this template needs. Packer 1.7+ reads this block (`packer init packer/`
# installs the plugin); Packer 1.6.6 does not know it and has the amazon builder
# built in, so compat-1.6.sh drops this file from its copy.
packer {
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = "~> 1.3"
    }
  }
}
