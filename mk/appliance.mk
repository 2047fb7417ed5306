# Appliance targets: Ansible, Packer, monitoring assets. Included by the main Makefile, which defines
# VENV (the virtualenv), BIN ($(VENV)/bin) and the `venv` target (the app plus requirements-dev.txt: ansible, ...).
#
#   make lint-appliance    lint-ansible + lint-packer + lint-monitoring + lint-proxy
#   make role-docs         roles/*/README.md from the argument specs (lint-ansible checks they are current)
#   make image             bake a Hetzner snapshot (needs HCLOUD_TOKEN)
#   make deploy            run playbooks/site.yml against inventory/production

PACKER          ?= packer
PROMTOOL        ?= promtool
APPLIANCE_INVENTORY ?= inventory/production
DEPLOY_ARGS     ?=
PACKER_ARGS     ?=
MONITORING_DIR  := roles/monitoring/files/prometheus
# Packer must find ansible-playbook (validate checks it; build runs it) and must not phone home.
PACKER_ENV      := PATH="$(abspath $(BIN)):$$PATH" CHECKPOINT_DISABLE=1 PACKER_NO_COLOR=1

.PHONY: lint-appliance lint-ansible lint-packer lint-monitoring lint-proxy role-docs image deploy deploy-check

lint-appliance: lint-ansible lint-packer lint-monitoring lint-proxy ## ansible-lint, yamllint, packer validate, promtool, caddy validate

lint-ansible: venv ## yamllint, ansible-lint (production profile), playbook syntax, role READMEs current
	$(BIN)/yamllint --strict .
	$(BIN)/ansible-lint
	$(BIN)/ansible-playbook --syntax-check site.yml playbooks/site.yml playbooks/deploy.yml playbooks/restore.yml
	$(PYTHON) tools/role_docs.py --check

role-docs: venv ## regenerate roles/*/README.md from each role's meta/argument_specs.yml and defaults
	$(PYTHON) tools/role_docs.py

lint-packer: venv ## packer fmt -check and validate (a dummy token)
	@command -v $(PACKER) >/dev/null || { echo "lint-packer: '$(PACKER)' not found (apt-get install packer)" >&2; exit 1; }
	@test -x $(BIN)/ansible-playbook || { echo "lint-packer: $(BIN)/ansible-playbook not found (create the venv first)" >&2; exit 1; }
	$(PACKER_ENV) $(PACKER) fmt -check -diff packer/
	@# the null source checks that its key file exists: validate against a throwaway one (a fresh clone has none)
	dir=$$(mktemp -d) && trap 'rm -rf "$$dir"' EXIT && ssh-keygen -q -t ed25519 -N '' -f "$$dir/key" && \
	  $(PACKER_ENV) HCLOUD_TOKEN="$${HCLOUD_TOKEN:-dummy-token-for-validate}" \
	  $(PACKER) validate -var ssh_private_key_file="$$dir/key" packer/

lint-monitoring: venv ## promtool check rules/config, rule unit tests, dashboard JSON
	@command -v $(PROMTOOL) >/dev/null || { echo "lint-monitoring: '$(PROMTOOL)' not found (apt-get install prometheus)" >&2; exit 1; }
	$(PROMTOOL) check rules $(MONITORING_DIR)/rules/*.yml
	$(PROMTOOL) check config $(MONITORING_DIR)/prometheus.yml
	cd $(MONITORING_DIR)/tests && $(PROMTOOL) test rules *.test.yml
	$(BIN)/python -c 'import json, sys; [json.load(open(f)) for f in sys.argv[1:]]' roles/monitoring/files/grafana/*.json

# The production Caddyfile (ACME issuer, e-mail, domain) rendered from the role's template with the production
# inventory and checked by Caddy itself, offline (a throwaway data directory: no CA or account is made here).
lint-proxy: venv ## caddy validate of the production Caddyfile (ACME), rendered from roles/proxy
	@command -v caddy >/dev/null || { echo "lint-proxy: 'caddy' not found (apt-get install caddy)" >&2; exit 1; }
	dir=$$(mktemp -d) && trap 'rm -rf "$$dir"' EXIT && \
	  $(BIN)/ansible localhost -c local -i localhost, -e ansible_python_interpreter=$(abspath $(PYTHON)) \
	    -e @roles/proxy/defaults/main.yml -e @inventory/production/group_vars/appliance.yml \
	    -m ansible.builtin.template -a "src=roles/proxy/templates/Caddyfile.j2 dest=$$dir/Caddyfile mode=0600" \
	    >/dev/null && grep -q '^\s*email ' "$$dir/Caddyfile" && \
	  XDG_DATA_HOME=$$dir XDG_CONFIG_HOME=$$dir caddy validate --adapter caddyfile --config "$$dir/Caddyfile"

image: venv ## bake the Hetzner snapshot (needs HCLOUD_TOKEN)
	@if [ -z "$${HCLOUD_TOKEN:-}" ]; then \
	  echo "make image: HCLOUD_TOKEN is not set. Create a read/write API token in the Hetzner Cloud Console" >&2; \
	  echo "(Security > API tokens) and run: HCLOUD_TOKEN=... make image" >&2; exit 1; fi
	@command -v $(PACKER) >/dev/null || { echo "make image: '$(PACKER)' not found (apt-get install packer)" >&2; exit 1; }
	@test -x $(BIN)/ansible-playbook || { echo "make image: $(BIN)/ansible-playbook not found (create the venv first)" >&2; exit 1; }
	$(PACKER_ENV) $(PACKER) build -only=hcloud.debian12 $(PACKER_ARGS) packer/

deploy: venv ## ansible-playbook playbooks/site.yml against inventory/production
	@test -x $(BIN)/ansible-playbook || { echo "make deploy: $(BIN)/ansible-playbook not found (create the venv first)" >&2; exit 1; }
	$(BIN)/ansible-playbook -i $(APPLIANCE_INVENTORY) playbooks/site.yml $(DEPLOY_ARGS)

deploy-check: venv ## the same in --check --diff mode
	$(BIN)/ansible-playbook -i $(APPLIANCE_INVENTORY) playbooks/site.yml --check --diff $(DEPLOY_ARGS)
