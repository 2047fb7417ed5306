#!/bin/sh
# The last provisioner of the image build (packer/firehose.pkr.hcl): remove what must be unique to each server
# made from the image, or must not be in it at all. Runs as root (sudo) on the build server.
set -eu

echo "cleanup: machine-id (systemd makes a new one at first boot)"
truncate -s 0 /etc/machine-id
if [ -f /var/lib/dbus/machine-id ] && [ ! -L /var/lib/dbus/machine-id ]; then rm -f /var/lib/dbus/machine-id; fi

echo "cleanup: SSH host keys (ssh-hostkeys.service makes new ones before sshd starts)"
rm -f /etc/ssh/ssh_host_*

echo "cleanup: Caddy's local CA, ACME account and certificates (each server gets its own)"
rm -rf /var/lib/caddy/.local/share/caddy /var/lib/caddy/.config/caddy /root/.local/share/caddy /run/caddy-validate

if command -v cloud-init >/dev/null 2>&1; then
  echo "cleanup: cloud-init state (it runs again at first boot)"
  cloud-init clean --logs --seed
fi

echo "cleanup: apt caches"
apt-get clean
rm -rf /var/lib/apt/lists/*

echo "cleanup: journal, shell history"
journalctl --rotate >/dev/null 2>&1 || true
journalctl --vacuum-time=1s >/dev/null 2>&1 || true
rm -f /root/.bash_history /home/*/.bash_history
sync
