# The firehose appliance image (HCL2 for Packer 1.6.6: no `packer { required_plugins }` block there).
#
#   make image                       HCLOUD_TOKEN=... packer build -only=hcloud.debian12 packer/
#   tests/host/testhost.sh provision packer build -only=null.testhost -var ssh_host=... packer/
#
# Both sources run the very same provisioners: playbooks/site.yml against group `appliance` with firehose_bake=true
# (no secret is placed: `make deploy` does that on a server made from the image), then packer/cleanup.sh (the
# last one: machine-id, SSH host keys, Caddy's CA, cloud-init state and apt caches removed).
# Nothing logs in as root: the build server's cloud-init makes the `deploy` user (with the key Packer gave root),
# and Packer and Ansible log in as that user and use sudo.

variable "hcloud_token" {
  type        = string
  default     = env("HCLOUD_TOKEN")
  description = "Hetzner Cloud API token (from HCLOUD_TOKEN; never written in a file)."
  sensitive   = true
}

variable "server_type" {
  type        = string
  default     = "cx33"
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
  default     = "deploy"
  description = "SSH user of both builds (sudo without password); the roles' ssh_deploy_user."
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
  token        = var.hcloud_token
  image        = var.base_image
  location     = var.location
  server_type  = var.server_type
  server_name  = "${var.snapshot_prefix}-build-${local.timestamp}"
  ssh_username = var.ssh_username
  # A fresh Hetzner server has only root: make the deploy user with root's key (the one Packer generated).
  user_data     = <<-EOT
    #cloud-config
    users:
      - name: ${var.ssh_username}
        groups: [sudo]
        shell: /bin/bash
        lock_passwd: true
        sudo: "ALL=(ALL:ALL) NOPASSWD: ALL"
    runcmd:
      - [sh, -c, "install -d -m 0700 -o ${var.ssh_username} -g ${var.ssh_username} /home/${var.ssh_username}/.ssh && install -m 0600 -o ${var.ssh_username} -g ${var.ssh_username} /root/.ssh/authorized_keys /home/${var.ssh_username}/.ssh/authorized_keys"]
  EOT
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
    user          = var.ssh_username
    # Packer 1.6's local SSH proxy offers only an RSA host key, which Debian 12's OpenSSH refuses.
    use_proxy = false
    extra_arguments = concat(
      ["--extra-vars", "@${local.repo_root}/${var.ansible_extra_vars_files[source.name]}",
      "--extra-vars", "{\"firehose_bake\": true}"],
      var.ansible_extra_arguments,
    )
    ansible_env_vars = [
      "ANSIBLE_CONFIG=${local.repo_root}/ansible.cfg",
      "ANSIBLE_HOST_KEY_CHECKING=False",
      "ANSIBLE_NOCOLOR=1",
      "ANSIBLE_FORCE_COLOR=0",
    ]
  }

  # Last: what must differ between servers made from the image, or not be in it at all.
  provisioner "shell" {
    script          = "${local.repo_root}/packer/cleanup.sh"
    execute_command = "chmod +x {{ .Path }}; sudo -n env {{ .Vars }} {{ .Path }}"
  }
}
