# meterflow — the two commands a newcomer needs: `make demo` and `make test`.
# Every target sets up what is missing first (idempotent): Debian packages, a venv,
# and `pip install -e .[dev]`.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.meterflow-installed
# Debian packages installed when missing: python3 python3-venv python3-pip mosquitto
# systemd (for systemd-analyze verify of our units), chromium (the portal's browser tests,
# driven by the Python playwright package through /usr/bin/chromium) and fonts-wqy-microhei
# (Chinese glyphs in its screenshots),
# and postgresql when no PostgreSQL server is reachable (see the postgres target).

.PHONY: docs setup completion system-packages postgres demo test test-long lint typecheck unit bench bench-compare chaos clean

setup: system-packages postgres $(STAMP) completion

# Installs only what is missing, with apt-get (needs root, as on a concentrator or CI).
system-packages:
	@missing=""; \
	command -v python3 >/dev/null || missing="$$missing python3"; \
	python3 -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv python3-pip"; \
	command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || missing="$$missing fonts-wqy-microhei"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "need root for apt-get (or install:$$missing)"; exit 1; fi; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# The scale-out receiver path is tested against a real PostgreSQL. Nothing to do when
# MF_TEST_POSTGRES_URL is set or the machine's server already accepts us (on loopback
# with trust authentication, or on the Unix socket as a role named after this user).
# Otherwise: install Debian's postgresql, start its cluster, and create that role (a
# superuser, for the tests' private schemas) and the database "test".
PG_TCP := postgresql://postgres@127.0.0.1:5432/test
PG_SOCKET := postgresql:///test?host=/var/run/postgresql
postgres:
	@if [ -n "$$MF_TEST_POSTGRES_URL" ]; then exit 0; fi; \
	if command -v psql >/dev/null && { psql -qtAc 'SELECT 1' '$(PG_TCP)' >/dev/null 2>&1 || \
	   psql -qtAc 'SELECT 1' '$(PG_SOCKET)' >/dev/null 2>&1; }; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "no PostgreSQL for the tests: install postgresql or set MF_TEST_POSTGRES_URL"; exit 1; fi; \
	if ! command -v pg_ctlcluster >/dev/null; then \
	  echo "installing Debian packages: postgresql"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; fi; \
	version=$$(ls /usr/lib/postgresql | sort -V | tail -1); \
	pg_lsclusters -h | grep -q "^$$version main" || pg_createcluster "$$version" main; \
	pg_ctlcluster "$$version" main start 2>/dev/null || true; \
	for i in $$(seq 60); do pg_isready -q -h /var/run/postgresql && break; sleep 1; done; \
	me=$$(id -un); \
	su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname = '$$me'\"" | grep -q 1 || \
	  su postgres -c "createuser --superuser $$me"; \
	su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname = 'test'\"" | grep -q 1 || \
	  su postgres -c "createdb --owner $$me test"; \
	psql -qtAc 'SELECT 1' '$(PG_SOCKET)' >/dev/null

$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# Tab completion for the three CLIs (click's own), written into the venv and sourced by
# its activate script in bash; see docs/getting-started.md, "Shell completion", for a system-wide install.
COMPLETIONS := $(VENV)/share/bash-completion/completions
completion: $(STAMP)
	@mkdir -p $(COMPLETIONS)
	@for cmd in concentrator cloud-receiver hil-sim; do \
	  var=_$$(echo $$cmd | tr 'a-z-' 'A-Z_')_COMPLETE; \
	  env $$var=bash_source $(VENV)/bin/$$cmd > $(COMPLETIONS)/$$cmd.tmp && \
	  mv $(COMPLETIONS)/$$cmd.tmp $(COMPLETIONS)/$$cmd; \
	done
	@grep -q 'meterflow-completion' $(VENV)/bin/activate || \
	  echo 'if [ -n "$${BASH_VERSION:-}" ]; then for f in "$$VIRTUAL_ENV"/share/bash-completion/completions/*; do . "$$f"; done; fi  # meterflow-completion' >> $(VENV)/bin/activate

# The manual (docs/, mkdocs.yml) as a site in site/, warnings as errors; the command
# reference in it is generated from the click definitions.
docs: setup
	$(VENV)/bin/mkdocs build --strict -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports  # the layering contracts in .importlinter

typecheck: setup
	$(VENV)/bin/mypy --strict -p drivers -p contract -p clitools -p concentrator -p cloud_receiver -p hil_sim

unit: setup
	$(VENV)/bin/pytest -q -n 3 --dist loadfile -m 'not long' --durations=15  # three workers: most tests wait on real processes (a third of 2 cores busy with two); keep `make test` under 15 minutes

test: lint typecheck docs unit

# The longest runs at full size (MF_LONG=1: 10,000 bad payloads instead of 2,000, four
# 15-minute slots of 256 meters instead of two, ...) and the tests marked long (only
# here): every slow and long test.
test-long: setup
	MF_LONG=1 $(VENV)/bin/pytest -q -n 2 --dist loadfile -m 'slow or long' --durations=15

demo: setup
	$(PY) -m hil_sim.demo

bench: setup
	$(PY) bench/codec.py
	$(PY) bench/daemon.py
	$(PY) bench/wire.py
	$(PY) bench/receiver.py
	$(PY) bench/plc.py
	$(PY) bench/forecast.py
	$(PY) bench/scan.py
	$(PY) bench/metrics.py
	$(PY) bench/loadprofile.py
	$(PY) bench/api.py
	$(PY) bench/portal.py

# Every benchmark on BASE (a git revision) and on this tree, alternating, in one sitting:
# ratios hold on a noisy machine where absolute times do not. Fails when a figure is
# more than 10 % worse than on BASE.
BASE ?= HEAD~1
bench-compare: setup
	$(PY) bench/compare.py --base $(BASE)

# The long soak: the whole chain under random faults (CHAOS_MINUTES, default 30), judged
# against the ground truth. `make test` runs a short version (tests/test_chaos.py).
CHAOS_MINUTES ?= 30
# CHAOS_DB=postgres: the receiver on a fresh schema of the local PostgreSQL.
CHAOS_DB ?=
chaos: setup
	$(PY) -m hil_sim.chaos --minutes $(CHAOS_MINUTES) $(if $(CHAOS_DB),--db $(CHAOS_DB))

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis demo-run bench-out site
