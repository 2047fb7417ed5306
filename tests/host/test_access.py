"""SSH: the deploy user with sudo and keys only; no root or password logins; host keys made at first boot."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.host import INVENTORY, var, why


def sshd_settings(host) -> dict[str, str]:
    out = host.run("sshd -T")
    assert out.rc == 0, out.stderr
    return dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)


@pytest.mark.parametrize(
    "key,expected",
    [("permitrootlogin", "no"), ("passwordauthentication", "no"), ("kbdinteractiveauthentication", "no"),
     ("pubkeyauthentication", "yes"), ("permitemptypasswords", "no"), ("authenticationmethods", "publickey")],
)
def test_sshd_setting(host, key, expected):
    assert sshd_settings(host).get(key) == expected


def test_only_the_deploy_user_may_log_in(host):
    assert sshd_settings(host).get("allowusers") == var("ssh_deploy_user", "deploy")


def test_deploy_user_has_sudo_and_a_key(host):
    user = var("ssh_deploy_user", "deploy")
    assert host.user(user).exists
    assert "sudo" in host.user(user).groups
    assert host.file(f"/home/{user}/.ssh/authorized_keys").size > 0
    assert host.run(f"sudo -n -u {user} sudo -n true").rc == 0, "the deploy user has no passwordless sudo"
    assert host.run("visudo -c").rc == 0


def _ssh(user: str, host_ip: str) -> subprocess.CompletedProcess:
    key = os.environ.get("TESTHOST_SSH_KEY") or str(INVENTORY.parent / "id_ed25519")
    if not Path(key).exists():
        pytest.fail(f"no SSH key at {key}")
    return subprocess.run(
        ["ssh", "-i", key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", f"{user}@{host_ip}", "true"],
        capture_output=True, text=True, timeout=60, check=False)


def test_root_login_refused_even_with_a_valid_key(host_ip):
    """testhost.sh gives root the very key the deploy user logs in with: sshd must refuse root all the same."""
    root = _ssh("root", host_ip)
    assert root.returncode != 0 and "Permission denied" in root.stderr, (root.returncode, root.stderr)
    deploy = _ssh(var("ssh_deploy_user", "deploy"), host_ip)
    assert deploy.returncode == 0, deploy.stderr


def test_password_login_not_offered(host_ip):
    out = subprocess.run(
        ["ssh", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
         "-o", "PreferredAuthentications=password,keyboard-interactive", "-o", "PubkeyAuthentication=no",
         "-o", "ConnectTimeout=10", f"{var('ssh_deploy_user', 'deploy')}@{host_ip}", "true"],
        capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode != 0
    assert "(publickey)" in out.stderr, out.stderr


def test_host_keys_were_made_at_first_boot(host):
    """The image has no host keys (testhost.sh image-check): this boot's ssh-hostkeys.service made them."""
    unit = host.service("ssh-hostkeys")
    assert unit.is_enabled
    result = host.run("systemctl show -p ActiveState -p Result -p ConditionResult ssh-hostkeys.service").stdout
    assert "ConditionResult=yes" in result and "Result=success" in result, result + why(host, "ssh-hostkeys")
    assert host.file("/etc/ssh/ssh_host_ed25519_key").exists
