"""A private SFTP server on this machine's end of the test network: the off-box backup target of the test host.

`SftpTarget` runs this machine's `/usr/sbin/sshd` (Debian's openssh-server) as a separate process with a
configuration, host key and authorized key of its own under a temporary directory: it listens on the veth address
only, accepts only the test host's backup key, and only for SFTP, chrooted into a directory holding the restic
repository (`/repo` as the host sees it). This machine's own sshd and its configuration are never touched. It is
stopped (by its pid) and its directory removed afterwards.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")  # sshd's compiled-in privilege-separation directory (empty, root-owned)


class SftpTarget:
    """The SFTP server; use it as a context manager. `repo` is the repository directory on this machine."""

    def __init__(self, address: str, port: int, authorized_key: str, base: Path) -> None:
        if not SSHD.exists():
            raise RuntimeError(f"{SSHD} not found: apt-get install openssh-server (the test runs a private sshd "
                               "as the SFTP backup target; this machine's own ssh service is not used)")
        self.address, self.port = address, port
        self.authorized_key = authorized_key.strip()
        base.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="sftp-target.", dir=base))
        self.dir.chmod(0o755)
        # sshd refuses a chroot with any path component that is not root-owned or is group/world-writable (a clone
        # under /tmp would be): the jail lives in /run, root's and 0755, whatever the checkout's location
        self.jail = Path(tempfile.mkdtemp(prefix="firehose-sftp-jail.", dir="/run"))
        self.repo = self.jail / "repo"
        self.log = self.dir / "sshd.log"
        # One host key for every run (kept beside the test host's own key pair): the box remembers the first one it
        # saw (StrictHostKeyChecking accept-new), as it would a Storage Box's.
        self.host_key = base / "sftp_host_ed25519"
        self.proc: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> Path:
        self.jail.chmod(0o755)
        self.repo.mkdir(mode=0o700)
        if not self.host_key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.host_key)], check=True)
        keys = self.dir / "authorized_keys"
        keys.write_text(self.authorized_key + "\n")
        keys.chmod(0o600)
        config = self.dir / "sshd_config"
        config.write_text("\n".join([
            f"ListenAddress {self.address}:{self.port}",
            f"HostKey {self.host_key}",
            f"PidFile {self.dir / 'sshd.pid'}",
            f"AuthorizedKeysFile {keys}",
            "AllowUsers root",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            f"ChrootDirectory {self.jail}",
            "ForceCommand internal-sftp",
            "Subsystem sftp internal-sftp",
            "AllowTcpForwarding no",
            "X11Forwarding no",
            "LogLevel VERBOSE",
            "",
        ]))
        return config

    def __enter__(self) -> SftpTarget:
        config = self._write_config()
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        check = subprocess.run([str(SSHD), "-t", "-f", str(config)], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"the test's sshd configuration {config} is invalid: {check.stderr.strip()}")
        self.proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL,
                                     stderr=self.log.open("wb"))
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection((self.address, self.port), timeout=2):
                    return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.__exit__(None, None, None)
                    raise RuntimeError(f"the test's sshd did not listen on {self.address}:{self.port}; "
                                       f"its log:\n{self.log.read_text(errors='replace')[-2000:]}") from None
                time.sleep(0.2)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.jail, ignore_errors=True)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
