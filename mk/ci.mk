# CI's own proof that it installs what it uses. Included by the Makefile. Needs root.
#
#   make ci-root [CI_ROOT_RUN="make lint && make test"]   a command in a fresh minimal Debian 12 root (.ci/fresh-root)

CI_ROOT_RUN ?= make lint && make test

.PHONY: ci-root

ci-root: ## make lint and make test in a fresh minimal Debian 12 root with only .ci/packages installed (HEAD)
	.ci/fresh-root '$(CI_ROOT_RUN)'
