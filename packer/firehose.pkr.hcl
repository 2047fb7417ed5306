# The firehose appliance image (HCL2 for Packer 1.6.6: no `packer { required_plugins }` block there).
#
#   make image                       HCLOUD_TOKEN=... packer build -only=hcloud.debian12 packer/
#   tests/host/testhost.sh provision packer build -only=null.testhost -var ssh_host=... packer/
#
# Both sources run the very same Ansible provisioner: playbooks/site.yml against group `appliance`.

variable "hcloud_token" {
  type        = string
  default     = env("HCLOUD_TOKEN")
  description = "Hetzner Cloud API token (from HCLOUD_TOKEN; never written in a file)."
  sensitive   = true
}

variable "server_type" {
  type        = string
  default     = "cx32"
  description = "Server type of the build server (the snapshot runs on this type or larger)."
}

variable "location" {
  type        = string
  default     = "nbg1"
  description = "Hetzner location of the build server (and so of the snapshot)."
}

variable "base_image" {
  type        = string
  default     = "debian-12"
  description = "Hetzner base image."
}

variable "snapshot_prefix" {
  type        = string
  default     = "firehose"
  description = "Snapshot names are <prefix>-<UTC timestamp>."
}

variable "ssh_host" {
  type        = string
  default     = "127.0.0.1"
  description = "null.testhost: address of the booted test host."
}

variable "ssh_port" {
  type        = number
  default     = 22
  description = "null.testhost: SSH port of the test host."
}

variable "ssh_username" {
  type        = string
  default     = "root"
  description = "null.testhost: SSH user of the test host."
}

variable "ssh_private_key_file" {
  type        = string
  default     = "var/test-host/id_ed25519"
  description = "null.testhost: private key for the test host."
}

variable "ansible_extra_vars_files" {
  type        = map(string)
  description = "Per source name: a YAML file (relative to the repository root) passed to ansible-playbook as extra vars."
  default = {
    debian12 = "packer/image-vars.yml"
    testhost = "inventory/test/group_vars/appliance.yml"
  }
}

variable "ansible_extra_arguments" {
  type        = list(string)
  default     = []
  description = "More ansible-playbook arguments (e.g. [\"-v\"] or [\"--tags\", \"app\"])."
}

locals {
  repo_root = abspath("${path.root}/..")
  timestamp = formatdate("YYYYMMDD-hhmmss", timestamp())
}

source "hcloud" "debian12" {
  token         = var.hcloud_token
  image         = var.base_image
  location      = var.location
  server_type   = var.server_type
  server_name   = "${var.snapshot_prefix}-build-${local.timestamp}"
  ssh_username  = "root"
  snapshot_name = "${var.snapshot_prefix}-${local.timestamp}"
  snapshot_labels = {
    app        = "firehose"
    role       = "appliance"
    base_image = var.base_image
    built      = local.timestamp
    built_by   = "packer"
  }
}

source "null" "testhost" {
  ssh_host             = var.ssh_host
  ssh_port             = var.ssh_port
  ssh_username         = var.ssh_username
  ssh_private_key_file = var.ssh_private_key_file
  ssh_timeout          = "2m"
}

build {
  sources = [
    "source.hcloud.debian12",
    "source.null.testhost",
  ]

  provisioner "ansible" {
    playbook_file = "${local.repo_root}/playbooks/site.yml"
    groups        = ["appliance"]
    user          = source.name == "testhost" ? var.ssh_username : "root"
    # Packer 1.6's local SSH proxy offers only an RSA host key, which Debian 12's OpenSSH refuses.
    use_proxy = false
    extra_arguments = concat(
      ["--extra-vars", "@${local.repo_root}/${var.ansible_extra_vars_files[source.name]}"],
      var.ansible_extra_arguments,
    )
    ansible_env_vars = [
      "ANSIBLE_CONFIG=${local.repo_root}/ansible.cfg",
      "ANSIBLE_HOST_KEY_CHECKING=False",
      "ANSIBLE_NOCOLOR=1",
      "ANSIBLE_FORCE_COLOR=0",
    ]
  }
}
