#!/usr/bin/env bash
# The CI test host: a Debian 12 root filesystem booted with systemd-nspawn in its own network namespace,
# reachable over SSH, with a loop device that the parquet_volume role sees as the Hetzner volume.
#
#   tests/host/testhost.sh up          build (or reuse) the rootfs, boot it, wait for SSH, write the inventory
#   tests/host/testhost.sh provision   run the Packer template's null build (bake: no secrets; cleanup last) against it
#   tests/host/testhost.sh image-check power the host off, scan its root filesystem for the build environment's
#                                      secrets and for SSH host keys / a machine-id (none may be there), boot it again
#   tests/host/testhost.sh deploy      playbooks/deploy.yml: place the secrets (the dummies below) and start everything
#   tests/host/testhost.sh idempotence run playbooks/site.yml again and fail unless the recap says changed=0
#   tests/host/testhost.sh test [ARGS] pytest tests/host (testinfra) against the running host
#   tests/host/testhost.sh down        stop the host and remove everything `up` created (safe to run any time)
#   tests/host/testhost.sh create      up, provision, image-check, deploy; tears down on failure (TESTHOST_KEEP_ON_FAILURE=1 keeps it)
#   tests/host/testhost.sh ci          create, idempotence, test, down (always); prints the time of each phase
#   tests/host/testhost.sh status      what is up; exit 0 only when the host answers on SSH
#   tests/host/testhost.sh ssh [CMD]   a shell (or one command) as the deploy user on the host (sudo for root)
#
# Everything lives under var/test-host/ (see docs/testhost.md). Needs root, mmdebstrap, systemd-nspawn,
# iproute2, nftables, losetup, openssh-client. It fails loudly, never skips, when the machine cannot do this.
set -Eeuo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STATE=${TESTHOST_DIR:-$REPO/var/test-host}
CACHE=${TESTHOST_CACHE:-$STATE/cache}
BIN=${TESTHOST_VENV_BIN:-$REPO/.venv/bin}
NAME=${TESTHOST_NAME:-fhtest}                 # netns, nft table, cgroup; veth names derive from it (<= 15 chars)
NET=${TESTHOST_NET:-10.213.77}               # a /30: .1 is this machine's end, .2 the host
export TESTHOST_NET=$NET                     # the test inventory derives the SSH allowlist and this machine's addresses from it
HOST_IP=$NET.2
GW_IP=$NET.1
VETH_OUT=${NAME}-o
VETH_IN=${NAME}-i
NFT_TABLE=${NAME}_nat
HOSTNAME_=${TESTHOST_HOSTNAME:-firehose-test}
VOLUME_SIZE=${TESTHOST_VOLUME_SIZE:-4G}
BOOT_TIMEOUT=${TESTHOST_BOOT_TIMEOUT:-120}
SUITE=bookworm
# shellcheck source=.ci/debian-mirrors
. "$REPO/.ci/debian-mirrors"
# What a freshly created Hetzner Debian 12 server has that matters here, plus python3-apt so Ansible's apt
# module need not bootstrap it. The roles install everything else.
PACKAGES=systemd,systemd-sysv,dbus,openssh-server,python3,python3-apt,sudo,ca-certificates,iproute2,procps,e2fsprogs
ROOTFS_RECIPE=3   # bump when the customize hook below changes, so the cached tarball is rebuilt
# Root logins are off on the appliance: everything logs in as this user (sudo without password), as on a Hetzner
# server made by the Packer template (its cloud-init makes the user). Root keeps our key, so the tests can show
# that root's logins are refused even with a valid key.
SSH_USER=${TESTHOST_SSH_USER:-deploy}
# Known dummy secrets in the environment of every phase (SECRET_VARS names them).
# shellcheck source=tests/host/dummy-secrets.sh
. "$REPO/tests/host/dummy-secrets.sh"

ROOT=$STATE/rootfs
KEY=$STATE/id_ed25519
INVENTORY=$STATE/inventory
CONSOLE=$STATE/console.log
VOLUME_IMG=$STATE/volume.img
CONTROL_PATH=/tmp/testhost-$NAME-%C
SSH_OPTS=(-i "$KEY" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
          -o ConnectTimeout=5 -o BatchMode=yes)

log() { printf '[testhost] %s\n' "$*" >&2; }
die() { printf '[testhost] ERROR: %s\n' "$*" >&2; exit 1; }
state_get() { [ -f "$STATE/$1" ] && cat "$STATE/$1" || true; }

host_ssh() { ssh "${SSH_OPTS[@]}" "$SSH_USER@$HOST_IP" "$@"; }

require_machine() {
  [ "$(id -u)" = 0 ] || die "must run as root (it creates a network namespace, a loop device and nft rules)"
  local missing=()
  for tool in mmdebstrap systemd-nspawn ip nft losetup ssh ssh-keygen zstd tar; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  [ ${#missing[@]} = 0 ] || die "missing tools: ${missing[*]} (apt-get install mmdebstrap systemd-container iproute2 nftables openssh-client zstd)"
}

# ---------------------------------------------------------------------------------------------------------------
# Volume: a sparse file on a loop device. The id must match the test inventory's volume id.
volume_id() {
  local id
  id=$("$BIN/python" - "$REPO/inventory/test/group_vars" <<'EOF' 2>/dev/null || true
import sys, pathlib, yaml
root = pathlib.Path(sys.argv[1])
for f in sorted(list(root.glob("**/*.yml")) + list(root.glob("**/*.yaml"))):
    data = yaml.safe_load(f.read_text()) or {}
    for k, v in data.items():
        if k.endswith("volume_id") and v not in (None, ""):
            print(v)
            sys.exit(0)
EOF
)
  if [ -z "$id" ]; then
    log "no *_volume_id in inventory/test/group_vars: using volume id 100001"
    id=100001
  fi
  echo "$id"
}

# ---------------------------------------------------------------------------------------------------------------
rootfs_tarball() {
  local key
  key=$(printf '%s\n' "$SUITE" "$PACKAGES" "${MIRRORS[@]}" "$ROOTFS_RECIPE" | sha256sum | cut -c1-16)
  echo "$CACHE/rootfs-$SUITE-$key.tar.zst"
}

build_rootfs() {
  local tarball
  tarball=$(rootfs_tarball)
  mkdir -p "$CACHE"
  if [ -s "$tarball" ]; then
    log "rootfs: cached $(basename "$tarball")"
  else
    log "rootfs: building $SUITE with mmdebstrap (packages: $PACKAGES)"
    local t0=$SECONDS
    # shellcheck disable=SC2016
    mmdebstrap --variant=important --include="$PACKAGES" \
      --customize-hook='chroot "$1" systemctl enable ssh.service' \
      --customize-hook='chroot "$1" systemctl mask getty@tty1.service serial-getty@.service' \
      --customize-hook='rm -f "$1"/etc/machine-id && touch "$1"/etc/machine-id' \
      "$SUITE" "$tarball.tmp.tar.zst" "${MIRRORS[@]}" >"$STATE/mmdebstrap.log" 2>&1 \
      || { tail -30 "$STATE/mmdebstrap.log" >&2; rm -f "$tarball.tmp.tar.zst"; die "mmdebstrap failed (log: $STATE/mmdebstrap.log)"; }
    mv "$tarball.tmp.tar.zst" "$tarball"
    log "rootfs: built in $((SECONDS - t0)) s"
  fi
  rm -rf "$ROOT"
  mkdir -p "$ROOT"
  tar --zstd -xpf "$tarball" --numeric-owner --xattrs --xattrs-include='*' -C "$ROOT"
}

customize_rootfs() {
  local vol_id=$1 loopdev=$2
  # SSH: our key for root (whose logins the appliance refuses) and for the deploy user with sudo (what the
  # Packer template's cloud-init makes on a Hetzner server).
  install -d -m 0700 "$ROOT/root/.ssh"
  install -m 0600 "$KEY.pub" "$ROOT/root/.ssh/authorized_keys"
  chroot "$ROOT" useradd --create-home --shell /bin/bash --groups sudo "$SSH_USER"
  chroot "$ROOT" passwd --lock "$SSH_USER" >/dev/null
  install -d -m 0700 "$ROOT/home/$SSH_USER/.ssh"
  install -m 0600 "$KEY.pub" "$ROOT/home/$SSH_USER/.ssh/authorized_keys"
  chroot "$ROOT" chown -R "$SSH_USER:$SSH_USER" "/home/$SSH_USER/.ssh"
  printf '%s ALL=(ALL:ALL) NOPASSWD: ALL\n' "$SSH_USER" >"$ROOT/etc/sudoers.d/90-$SSH_USER"
  chmod 0440 "$ROOT/etc/sudoers.d/90-$SSH_USER"
  echo "$HOSTNAME_" >"$ROOT/etc/hostname"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' "$HOSTNAME_" >"$ROOT/etc/hosts"
  # This machine's CA bundle (it may hold a CA the registries are reached through). Split into
  # /usr/local/share/ca-certificates too, so an update-ca-certificates run on the host keeps it.
  install -m 0644 /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
  install -d "$ROOT/usr/local/share/ca-certificates/testhost"
  awk -v dir="$ROOT/usr/local/share/ca-certificates/testhost" '
    /-----BEGIN CERTIFICATE-----/ { n++; f = sprintf("%s/host-%03d.crt", dir, n) }
    f { print > f }
    /-----END CERTIFICATE-----/ { close(f); f = "" }' /etc/ssl/certs/ca-certificates.crt
  # The volume: udev does not run in a container, so create the by-id link early at every boot.
  # (In a container /sys is read-only, so systemd has no .device units and mount units do not wait for one.)
  install -d "$ROOT/etc/tmpfiles.d"
  printf 'd /dev/disk 0755 root root -\nd /dev/disk/by-id 0755 root root -\nL+ /dev/disk/by-id/scsi-0HC_Volume_%s - - - - %s\n' \
    "$vol_id" "$loopdev" >"$ROOT/etc/tmpfiles.d/testhost-volume.conf"
  # Package caches shared across runs (bind-mounted from var/test-host/cache).
  printf '[global]\ncache-dir = /var/cache/testhost-pip\n' >"$ROOT/etc/pip.conf"
  install -d -m 1777 "$CACHE/pip"
  install -d "$CACHE/apt-archives/partial"
  local apt_uid
  apt_uid=$(awk -F: '$1 == "_apt" { print $3 }' "$ROOT/etc/passwd")
  [ -n "$apt_uid" ] && chown "$apt_uid:0" "$CACHE/apt-archives/partial"
}

# ---------------------------------------------------------------------------------------------------------------
setup_network() {
  if [ ! -e "/run/netns/$NAME" ]; then
    ip netns add "$NAME"
  fi
  if ! ip link show "$VETH_OUT" >/dev/null 2>&1; then
    ip link add "$VETH_OUT" type veth peer name "$VETH_IN"
    ip link set "$VETH_IN" netns "$NAME"
  fi
  ip addr replace "$GW_IP/30" dev "$VETH_OUT"
  ip link set "$VETH_OUT" up
  ip -n "$NAME" link set lo up
  ip -n "$NAME" addr replace "$HOST_IP/30" dev "$VETH_IN"
  ip -n "$NAME" link set "$VETH_IN" up
  ip -n "$NAME" route replace default via "$GW_IP"
  # Outbound (Debian mirrors, PyPI): forward and masquerade in a table of our own.
  if [ ! -f "$STATE/ip_forward.saved" ]; then
    cat /proc/sys/net/ipv4/ip_forward >"$STATE/ip_forward.saved"
  fi
  echo 1 >/proc/sys/net/ipv4/ip_forward
  nft delete table ip "$NFT_TABLE" 2>/dev/null || true
  nft -f - <<EOF
table ip $NFT_TABLE {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr $HOST_IP oifname != "$VETH_OUT" masquerade
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "$VETH_OUT" accept
    oifname "$VETH_OUT" ct state established,related accept
  }
}
EOF
}

teardown_network() {
  nft delete table ip "$NFT_TABLE" 2>/dev/null || true
  ip link del "$VETH_OUT" 2>/dev/null || true
  if [ -e "/run/netns/$NAME" ]; then
    ip netns pids "$NAME" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$NAME" || true
  fi
  if [ -f "$STATE/ip_forward.saved" ]; then
    # Another test host (its own *_nat table) still needs forwarding: leave it on for that one.
    if nft list tables ip 2>/dev/null | grep -qE '^table ip [A-Za-z0-9_-]+_nat$'; then
      log "another test host is up (nft $(nft list tables ip | grep -E '_nat$' | head -1 | cut -d' ' -f3)): ip_forward stays on"
    else
      cat "$STATE/ip_forward.saved" >/proc/sys/net/ipv4/ip_forward || true
    fi
    rm -f "$STATE/ip_forward.saved"
  fi
}

# ---------------------------------------------------------------------------------------------------------------
# The container runs in cgroups of its own, so teardown can find every process it left behind.
CGROUP_DIRS=(/sys/fs/cgroup/systemd /sys/fs/cgroup/unified /sys/fs/cgroup)
cgroup_paths() {
  local base seen=""
  for base in "${CGROUP_DIRS[@]}"; do
    [ -f "$base/cgroup.procs" ] || continue
    case " $seen " in *" $base "*) continue ;; esac
    seen="$seen $base"
    echo "$base/testhost-$NAME"
  done
}

kill_cgroup_tree() {
  local cg pids
  for cg in $(cgroup_paths); do
    [ -d "$cg" ] || continue
    pids=$(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u || true)
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
  done
  sleep 0.5
  for cg in $(cgroup_paths); do
    [ -d "$cg" ] || continue
    # children first
    find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [ -d "$cg" ] && log "warning: cgroup $cg is still there"
  done
  return 0
}

# The container boots again by itself when it reboots: systemd-nspawn exits 133 after a `systemctl reboot` inside,
# and the supervising subshell starts it again (same rootfs, network namespace and volume). Any other exit ends it.
boot() {
  local loopdev=$1
  local cgs
  cgs=$(cgroup_paths)
  for cg in $cgs; do mkdir -p "$cg"; done
  : >"$CONSOLE"
  echo 1 >"$STATE/boots"
  # shellcheck disable=SC2086
  (
    for cg in $cgs; do echo $BASHPID >"$cg/cgroup.procs"; done
    while :; do
      setsid systemd-nspawn --boot --register=no --keep-unit --quiet \
        --directory="$ROOT" --machine="$NAME" --hostname="$HOSTNAME_" \
        --network-namespace-path="/run/netns/$NAME" \
        --resolv-conf=copy-host --timezone=copy --link-journal=no --console=read-only \
        --capability=CAP_NET_ADMIN,CAP_SYS_ADMIN \
        --bind="$loopdev" \
        --bind="$CACHE/apt-archives:/var/cache/apt/archives" \
        --bind="$CACHE/pip:/var/cache/testhost-pip" \
        </dev/null >>"$CONSOLE" 2>&1 &
      echo $! >"$STATE/nspawn.pid"
      rc=0
      wait $! || rc=$?
      [ "$rc" = 133 ] || break
      echo $(( $(cat "$STATE/boots") + 1 )) >"$STATE/boots"
      printf '[testhost] the host rebooted (systemd-nspawn exited 133): boot %s\n' "$(cat "$STATE/boots")" >>"$CONSOLE"
    done
  ) &
  echo $! >"$STATE/supervisor.pid"
  disown
  # The first nspawn pid (the supervisor writes it as soon as it has started it).
  local i
  for i in $(seq 1 50); do
    [ -s "$STATE/nspawn.pid" ] && [ "$(state_get nspawn.pid)" != "$(state_get supervisor.pid)" ] && break
    sleep 0.1
  done
  log "booting (systemd-nspawn pid $(state_get nspawn.pid), supervisor $(state_get supervisor.pid), console: $CONSOLE)"
}

wait_for_ssh() {
  local deadline=$((SECONDS + BOOT_TIMEOUT)) pid
  pid=$(state_get nspawn.pid)
  while [ $SECONDS -lt $deadline ]; do
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      tail -40 "$CONSOLE" >&2 || true
      die "systemd-nspawn exited during boot (console above, full log: $CONSOLE)"
    fi
    if host_ssh true 2>/dev/null; then
      # Wait for boot to settle so provisioning does not race the boot jobs.
      host_ssh 'timeout 60 systemctl is-system-running --wait >/dev/null 2>&1 || true'
      return 0
    fi
    sleep 1
  done
  tail -40 "$CONSOLE" >&2 || true
  die "no SSH on $HOST_IP after ${BOOT_TIMEOUT}s (console above, full log: $CONSOLE)"
}

write_inventory() {
  rm -rf "$INVENTORY"
  mkdir -p "$INVENTORY"
  cat >"$INVENTORY/hosts.yml" <<EOF
# Written by tests/host/testhost.sh up: the booted test host. group_vars links to inventory/test/group_vars.
all:
  children:
    appliance:
      hosts:
        $HOSTNAME_:
          ansible_host: $HOST_IP
          ansible_port: 22
          ansible_user: $SSH_USER
          ansible_ssh_private_key_file: $KEY
          ansible_ssh_common_args: >-
            -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
            -o ControlMaster=auto -o ControlPersist=60s -o ControlPath=$CONTROL_PATH
          ansible_python_interpreter: /usr/bin/python3
          # The deploy user, with sudo (testinfra runs its commands through sudo too).
          ansible_become: true
          # The test network (inventory/test/group_vars derives the addresses of this machine's end from it).
          testhost_net: "$NET"
EOF
  if [ -d "$REPO/inventory/test/group_vars" ]; then
    ln -s "$REPO/inventory/test/group_vars" "$INVENTORY/group_vars"
  else
    log "warning: inventory/test/group_vars does not exist yet: the inventory has no test variables"
  fi
  [ -d "$REPO/inventory/test/host_vars" ] && ln -s "$REPO/inventory/test/host_vars" "$INVENTORY/host_vars"
  cat >"$STATE/host.env" <<EOF
TESTHOST_IP=$HOST_IP
TESTHOST_GATEWAY=$GW_IP
TESTHOST_SSH_PORT=22
TESTHOST_SSH_USER=$SSH_USER
TESTHOST_SSH_KEY=$KEY
TESTHOST_VOLUME_ID=$(state_get volume.id)
TESTHOST_VOLUME_DEVICE=$(state_get volume.loop)
TESTHOST_INVENTORY=$INVENTORY
TESTHOST_STATE=$STATE
TESTHOST_NAME=$NAME
EOF
}

# ---------------------------------------------------------------------------------------------------------------
cmd_up() {
  require_machine
  mkdir -p "$STATE" "$CACHE"
  if [ -f "$STATE/nspawn.pid" ] && kill -0 "$(state_get nspawn.pid)" 2>/dev/null && host_ssh true 2>/dev/null; then
    log "already up at $HOST_IP (run 'down' first for a fresh host)"
    return 0
  fi
  # Anything half-made by an earlier run goes first.
  cmd_down >/dev/null 2>&1 || true
  trap 'rc=$?; trap - EXIT INT TERM; if [ $rc != 0 ] && [ -z "${TESTHOST_KEEP_ON_FAILURE:-}" ]; then
          log "up failed (exit $rc): tearing down (TESTHOST_KEEP_ON_FAILURE=1 keeps it)"; cmd_down || true; fi
        exit $rc' EXIT
  trap 'exit 130' INT TERM
  local t0=$SECONDS vol_id loopdev
  [ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -C "firehose-testhost" -f "$KEY"
  vol_id=$(volume_id)
  echo "$vol_id" >"$STATE/volume.id"

  build_rootfs
  local t_rootfs=$SECONDS

  rm -f "$VOLUME_IMG"
  truncate -s "$VOLUME_SIZE" "$VOLUME_IMG"
  if ! loopdev=$(losetup --find --show "$VOLUME_IMG" 2>"$STATE/losetup.err"); then
    die "cannot attach a loop device ($(cat "$STATE/losetup.err")): this machine cannot simulate the Hetzner volume"
  fi
  echo "$loopdev" >"$STATE/volume.loop"
  log "volume: loop device $loopdev (sparse file $VOLUME_IMG, $VOLUME_SIZE, blank) as /dev/disk/by-id/scsi-0HC_Volume_$vol_id"

  customize_rootfs "$vol_id" "$loopdev"
  setup_network
  boot "$loopdev"
  wait_for_ssh
  write_inventory
  trap - EXIT INT TERM
  log "up in $((SECONDS - t0)) s (rootfs $((t_rootfs - t0)) s, boot $((SECONDS - t_rootfs)) s): $SSH_USER@$HOST_IP, inventory $INVENTORY"
}

# Power the container off (its systemd shuts down cleanly) and remove what is left of its processes; the reboot
# supervisor goes first, so it does not boot the host again.
stop_host() {
  local pid sup
  sup=$(state_get supervisor.pid)
  if [ -n "$sup" ] && kill -0 "$sup" 2>/dev/null; then kill -TERM "$sup" 2>/dev/null || true; fi
  rm -f "$STATE/supervisor.pid"
  pid=$(state_get nspawn.pid)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -qa systemd-nspawn "/proc/$pid/cmdline" 2>/dev/null; then
    log "stopping the host (nspawn pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true    # nspawn asks the container's systemd to power off
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
      log "host did not power off in 30 s: killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$STATE/nspawn.pid"
  kill_cgroup_tree
}

cmd_down() {
  [ "$(id -u)" = 0 ] || die "must run as root"
  local loopdev
  stop_host
  # Mounts nspawn may have left (it normally unmounts everything with its mount namespace).
  if [ -d "$ROOT" ]; then
    { grep -F " $ROOT" /proc/self/mounts || true; } | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" || true; done
  fi
  loopdev=$(state_get volume.loop)
  if [ -n "$loopdev" ]; then
    losetup -d "$loopdev" 2>/dev/null || true
  fi
  # Any other loop device still on our image (e.g. from an interrupted run).
  if [ -f "$VOLUME_IMG" ]; then
    losetup -j "$VOLUME_IMG" -O NAME -n 2>/dev/null | xargs -r -n1 losetup -d 2>/dev/null || true
  fi
  rm -f "$STATE/volume.loop" "$VOLUME_IMG"
  teardown_network
  rm -rf "$ROOT" "$INVENTORY" "$STATE/host.env"
  for sock in /tmp/testhost-"$NAME"-*; do   # SSH connection masters (ControlPersist) from Ansible/testinfra
    [ -S "$sock" ] && ssh -o ControlPath="$sock" -O exit "$SSH_USER@$HOST_IP" >/dev/null 2>&1 || true
    rm -f "$sock"
  done
  # Verify.
  local left=()
  [ -e "/run/netns/$NAME" ] && left+=("netns $NAME")
  ip link show "$VETH_OUT" >/dev/null 2>&1 && left+=("veth $VETH_OUT")
  nft list table ip "$NFT_TABLE" >/dev/null 2>&1 && left+=("nft table $NFT_TABLE")
  [ -f "$VOLUME_IMG" ] && losetup -j "$VOLUME_IMG" | grep -q . && left+=("loop device")
  pgrep -f "systemd-nspawn.*--machine=$NAME" >/dev/null && left+=("nspawn process")
  [ ${#left[@]} = 0 ] || die "teardown left: ${left[*]}"
  log "down: nothing left"
}

cmd_status() {
  local pid
  pid=$(state_get nspawn.pid)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && host_ssh true 2>/dev/null; then
    echo "up: $SSH_USER@$HOST_IP (nspawn pid $pid, volume $(state_get volume.loop) id $(state_get volume.id)), inventory $INVENTORY"
    host_ssh 'systemctl is-system-running; systemctl --failed --no-legend --plain' || true
    return 0
  fi
  echo "down"
  return 1
}

packer_var_names() {
  grep -ohE '^[[:space:]]*variable[[:space:]]+"[^"]+"' "$REPO"/packer/*.pkr.hcl | sed -E 's/.*"([^"]+)"/\1/'
}

cmd_provision() {
  cmd_status >/dev/null || die "the test host is not up: run '$0 up' first"
  [ -d "$REPO/packer" ] || die "packer/ does not exist"
  command -v packer >/dev/null || die "packer is not installed"
  [ -x "$BIN/ansible-playbook" ] || die "$BIN/ansible-playbook not found: create the venv first"
  local names args=()
  names=$(packer_var_names)
  for v in ssh_host ssh_port ssh_username ssh_private_key_file; do
    grep -qx "$v" <<<"$names" || die "packer/ declares no variable \"$v\" (the null source needs it)"
  done
  args+=(-var "ssh_host=$HOST_IP" -var "ssh_port=22" -var "ssh_username=$SSH_USER" -var "ssh_private_key_file=$KEY")
  # The hcloud source's token must be set for the template to load, though -only skips that build.
  if grep -qx hcloud_token <<<"$names" && [ -z "${HCLOUD_TOKEN:-}" ] && [ -z "${PKR_VAR_hcloud_token:-}" ]; then
    args+=(-var "hcloud_token=unused-by-the-null-build")
  fi
  log "provisioning: packer build -only=null.testhost (log: $STATE/provision.log)"
  local t0=$SECONDS rc=0
  (cd "$REPO" && PATH="$BIN:$PATH" PACKER_NO_COLOR=1 ANSIBLE_FORCE_COLOR=0 CHECKPOINT_DISABLE=1 \
     packer build -color=false -only=null.testhost "${args[@]}" packer/) 2>&1 | tee "$STATE/provision.log" || rc=$?
  # (pipefail: rc is packer's status; the log is checked too, as packer 1.6 has exited 0 on errored builds.)
  if [ "$rc" != 0 ] || grep -qE "Build 'null.testhost' errored|^==> Some builds didn't complete" "$STATE/provision.log"; then
    die "provisioning failed after $((SECONDS - t0)) s (log: $STATE/provision.log)"
  fi
  log "provisioned in $((SECONDS - t0)) s"
}

# The baked image, powered off: no secret of the build environment, no SSH host key, no machine-id, no CA key.
scan_image() {
  local problems=() v hits
  for v in "${SECRET_VARS[@]}"; do
    hits=$(grep -rlsF --devices=skip -e "${!v}" "$ROOT" 2>/dev/null | head -5 || true)
    [ -z "$hits" ] || problems+=("$v's value in: ${hits//$'\n'/, }")
  done
  hits=$(find "$ROOT/etc/ssh" -name 'ssh_host_*' 2>/dev/null | head -5)
  [ -z "$hits" ] || problems+=("SSH host keys: ${hits//$'\n'/, }")
  [ ! -s "$ROOT/etc/machine-id" ] || problems+=("a machine-id: $(cat "$ROOT/etc/machine-id")")
  hits=$(find "$ROOT/var/lib/caddy" "$ROOT/root" -path '*/caddy/pki' 2>/dev/null | head -5)
  [ -z "$hits" ] || problems+=("a Caddy CA: ${hits//$'\n'/, }")
  if [ ${#problems[@]} != 0 ]; then
    printf '[testhost]   image: %s\n' "${problems[@]}" >&2
    return 1
  fi
  log "image-check: the root filesystem holds none of the ${#SECRET_VARS[@]} dummy secrets, no SSH host key, no machine-id"
}

cmd_image_check() {
  # (Not over SSH: sshd reads the host keys for every connection, and the cleanup removed them.)
  local pid
  pid=$(state_get nspawn.pid)
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || die "the test host is not running"
  local loopdev rc=0
  loopdev=$(state_get volume.loop)
  log "image-check: power off, scan the root filesystem, boot again"
  stop_host
  scan_image || rc=$?
  boot "$loopdev"
  wait_for_ssh
  [ "$rc" = 0 ] || die "the baked image is not clean (above)"
  host_ssh 'test -s /etc/ssh/ssh_host_ed25519_key.pub && test -s /etc/machine-id' \
    || die "after the reboot the host has no new SSH host key or machine-id"
  log "image-check: booted again with new SSH host keys and a new machine-id"
}

# One playbook of this checkout against the test host, without colours (its output goes to logs).
play() {
  (cd "$REPO" && ANSIBLE_FORCE_COLOR=0 ANSIBLE_NOCOLOR=1 "$BIN/ansible-playbook" -i "$INVENTORY" "$1")
}

# The secrets are placed at deploy time, never baked: playbooks/deploy.yml with the dummies in the environment.
cmd_deploy() {
  cmd_status >/dev/null || die "the test host is not up"
  log "deploy: playbooks/deploy.yml places the secrets (log: $STATE/deploy.log)"
  local t0=$SECONDS rc=0
  play playbooks/deploy.yml >"$STATE/deploy.log" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then
    tail -40 "$STATE/deploy.log" >&2
    die "deploy failed after $((SECONDS - t0)) s (log: $STATE/deploy.log)"
  fi
  log "deployed in $((SECONDS - t0)) s"
}

cmd_idempotence() {
  cmd_status >/dev/null || die "the test host is not up"
  log "second playbook run (must change nothing; log: $STATE/idempotence.log)"
  local t0=$SECONDS rc=0
  play playbooks/site.yml 2>&1 | tee "$STATE/idempotence.log" || rc=$?
  "$BIN/python" "$REPO/tests/host/recap.py" "$STATE/idempotence.log" || rc=1
  [ "$rc" = 0 ] || die "the second playbook run is not clean after $((SECONDS - t0)) s (log: $STATE/idempotence.log)"
  log "second run: changed=0 in $((SECONDS - t0)) s"
}

cmd_test() {
  cmd_status >/dev/null || die "the test host is not up: run 'make host-up' first"
  log "tests/host against $HOST_IP"
  # shellcheck disable=SC2086
  (cd "$REPO" && PATH="$BIN:$PATH" TESTHOST_INVENTORY="$INVENTORY" \
     "$BIN/python" -m pytest tests/host -m "${TESTHOST_MARKERS:-host}" -p no:cacheprovider \
       ${TESTHOST_PYTEST_ARGS:-} "$@")
}

# Boot, bake, check the image, deploy; on failure tear everything down (unless TESTHOST_KEEP_ON_FAILURE=1).
cmd_create() {
  local rc=0
  "$SELF" up || rc=$?
  if [ "$rc" = 0 ]; then "$SELF" provision || rc=$?; fi
  if [ "$rc" = 0 ]; then "$SELF" image-check || rc=$?; fi
  if [ "$rc" = 0 ]; then "$SELF" deploy || rc=$?; fi
  if [ "$rc" != 0 ]; then
    if [ -n "${TESTHOST_KEEP_ON_FAILURE:-}" ]; then
      log "failed (exit $rc); the host stays up for debugging (TESTHOST_KEEP_ON_FAILURE): '$SELF down' removes it"
    else
      log "failed (exit $rc): tearing down"
      "$SELF" down || true
    fi
  fi
  return "$rc"
}

# The whole CI check: boot, provision, second run with changed=0, tests/host; teardown always; first error wins.
cmd_ci() {
  local rc=0 summary=""
  trap '"$SELF" down >&2 || true; exit 130' INT TERM
  _phase() {
    local t=$SECONDS r=0
    "$SELF" "$1" || r=$?
    summary+=$(printf '  %-12s %4d s  %s' "$1" $((SECONDS - t)) "$([ $r = 0 ] && echo ok || echo "FAILED (exit $r)")")$'\n'
    if [ "$r" != 0 ] && [ "$rc" = 0 ]; then rc=$r; fi
    return "$r"
  }
  if cmd_status >/dev/null 2>&1; then
    log "a test host is up already: image-test starts from a fresh one"
  fi
  "$SELF" down >/dev/null 2>&1 || true
  if _phase up && _phase provision && _phase image-check && _phase deploy; then
    _phase idempotence || true
    _phase test || true          # run the tests even after a dirty second run: they tell more
  else
    summary+="  (no provisioned host: idempotence and tests not run)"$'\n'
  fi
  _phase down || true
  trap - INT TERM
  printf '[testhost] image-test phases:\n%s[testhost] image-test %s\n' "$summary" \
    "$([ $rc = 0 ] && echo passed || echo "FAILED (exit $rc)")" >&2
  return "$rc"
}

cmd_ssh() {
  local tty=()
  [ -t 0 ] && tty=(-t)   # a terminal for an interactive shell; none when a script feeds stdin
  exec ssh "${SSH_OPTS[@]}" "${tty[@]}" "$SSH_USER@$HOST_IP" "$@"
}

SELF=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
case "${1:-}" in
  up) cmd_up ;;
  create) cmd_create ;;
  ci) cmd_ci ;;
  test) shift; cmd_test "$@" ;;
  down) cmd_down ;;
  provision) cmd_provision ;;
  image-check) cmd_image_check ;;
  deploy) cmd_deploy ;;
  idempotence) cmd_idempotence ;;
  status) cmd_status ;;
  ssh) shift; cmd_ssh "$@" ;;
  *) echo "usage: $0 up|provision|image-check|deploy|idempotence|test|down|create|ci|status|ssh [command]" >&2; exit 2 ;;
esac
