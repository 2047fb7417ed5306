# Operating the box (docs/operations.md). Included by the Makefile, which defines VENV, BIN and PYTHON;
# APPLIANCE_INVENTORY comes from mk/appliance.mk (inventory/production unless set).
#
#   make restore   [SNAPSHOT=latest] [FORCE=1]   the backup repository's data back onto the box
#   make rollback                                the app back to the previous release on the box
#   make upgrade-test [UPGRADE_FROM=<ref>]       a test host deployed at UPGRADE_FROM, fed, upgraded to this checkout

SNAPSHOT ?= latest
FORCE    ?=
# The release an upgrade is tested from: the last release tag, else 8aaa639 (the last commit before the release
# layout, the backups and the alerting; docs/operations.md says so).
UPGRADE_FROM ?= $(shell git describe --tags --abbrev=0 2>/dev/null || echo 8aaa639)

.PHONY: restore rollback upgrade-test

restore: venv ## restore the latest backup (SNAPSHOT=id) onto the box; FORCE=1 moves existing data aside
	$(BIN)/ansible-playbook -i $(APPLIANCE_INVENTORY) playbooks/restore.yml \
	  -e backup_restore_snapshot='$(SNAPSHOT)' -e backup_restore_force=$(if $(FORCE),true,false)

rollback: venv ## return the box's app to the previous release (the deploy keeps it on the box)
	$(BIN)/ansible-playbook -i $(APPLIANCE_INVENTORY) site.yml --tags app,services -e app_rollback=true

upgrade-test: venv ## test host at UPGRADE_FROM (last tag, else 8aaa639), fed, upgraded to this checkout: nothing lost
	TESTHOST_VENV_BIN="$(abspath $(BIN))" UPGRADE_FROM='$(UPGRADE_FROM)' tests/host/upgrade.sh
