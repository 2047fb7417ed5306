# The CI test host (docs/testhost.md): a Debian 12 rootfs booted with systemd-nspawn in its own network
# namespace, provisioned by the Packer template's null build, checked with pytest-testinfra (tests/host).
# Included by the Makefile, which defines VENV, BIN and PYTHON. Needs root.
#
#   make host-up       boot + provision; stays up, inventory in var/test-host/inventory (group appliance)
#   make test-host     tests/host against the running host
#   make host-down     remove it all (netns, veth, nft table, loop device, processes, rootfs)
#   make image-test    host-up, second playbook run with changed=0, tests/host (the reboot test too), host-down (always)
#   make reboot-test   only the reboot-mid-ingest test, against the running host

TESTHOST     ?= tests/host/testhost.sh
TESTHOST_ENV  = TESTHOST_VENV_BIN="$(abspath $(BIN))"

.PHONY: host-up host-down host-status test-host image-test reboot-test

host-up: venv ## boot the nspawn test host and provision it (Packer null build); it stays up
	$(TESTHOST_ENV) $(TESTHOST) create

host-down: ## stop the test host and remove everything it created
	$(TESTHOST_ENV) $(TESTHOST) down

host-status: ## is the test host up? (and its failed units)
	@$(TESTHOST_ENV) $(TESTHOST) status

reboot-test: venv ## only the reboot-mid-ingest test (image-test runs it too) against the running test host
	$(TESTHOST_ENV) TESTHOST_MARKERS=reboot $(TESTHOST) test

test-host: venv ## run tests/host (pytest-testinfra) against the running test host
	$(TESTHOST_ENV) $(TESTHOST) test

image-test: venv ## boot + provision the test host, 2nd run must change nothing, tests/host (reboot included), tear down
	$(TESTHOST_ENV) $(TESTHOST) ci
