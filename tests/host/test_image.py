"""The image came out of the bake clean, and the deploy made it a server of its own (testhost.sh image-check
scans the powered-off root filesystem; these checks look at the booted result)."""

from __future__ import annotations


def test_machine_id_is_new(host):
    machine_id = host.file("/etc/machine-id").content_string.strip()
    assert len(machine_id) == 32, f"/etc/machine-id = {machine_id!r}"


def test_caddy_made_its_own_ca_at_first_boot(host):
    root = host.file("/var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt")
    assert root.exists, "no local CA: the image-check showed the bake left none, and Caddy made none since"


def test_cleanup_is_the_last_provisioner():
    """Packer runs provisioners in order: packer/cleanup.sh must come after the Ansible one."""
    from tests.support.paths import REPO

    template = (REPO / "packer" / "firehose.pkr.hcl").read_text()
    assert template.rfind('provisioner "shell"') > template.rfind('provisioner "ansible"')
    assert "cleanup.sh" in template[template.rfind('provisioner "shell"'):]
