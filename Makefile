# policy-ledger: the two commands a newcomer needs are `make run` and `make test`.
# Everything else installs itself: the virtual environment, Python packages (pinned by
# constraints.txt) and the buf CLI (pinned by protos/package-lock.json).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BUF    := protos/node_modules/.bin/buf
MO_FILES := $(patsubst %.po,%.mo,$(wildcard ledger/i18n/locales/*/LC_MESSAGES/ledger.po))
PROTOS := $(wildcard protos/ledger/v1/*.proto) $(wildcard protos/payments/v1/*.proto) \
          $(wildcard protos/ledger/internal/v1/*.proto)

.PHONY: run test lint proto proto-check bench bench-fairness bench-large bench-audit bench-submit bench-instances bench-households bench-renewals bench-small faults fuzz install clean serve
.PHONY: crash fiu-utils i18n i18n-extract
.PHONY: web verify-page chromium

run: $(STAMP) $(MO_FILES) ## Start a server on SQLite, submit and audit signed events, print the story.
	$(BIN)/policy-ledger demo

# make test runs the suite in PYTEST_WORKERS processes (pytest-xdist; `auto` is one per core,
# 0 runs it in this one process). Tests that must share a process carry @pytest.mark.xdist_group.
PYTEST_WORKERS ?= auto

test: $(STAMP) $(MO_FILES) fiu-utils web chromium ## Run the whole test suite (SQLite always, PostgreSQL where reachable).
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup

crash: $(STAMP) ## SIGKILL the server, its sequencer process or workers (serve --workers 2), and a test-owned PostgreSQL under load, CYCLES times each.
	POLICY_LEDGER_CRASH_CYCLES=$${CYCLES:-50} POLICY_LEDGER_CRASH_SEED=$${SEED:-15} \
	  $(BIN)/pytest -q --timeout=0 tests/durability/test_crash.py

fiu-utils: ## libfiu's fiu-run (Debian package), for the storage-fault injection test.
	@command -v fiu-run >/dev/null || (apt-get update -qq && apt-get install -y -qq fiu-utils) \
	  || echo "fiu-utils could not be installed: the storage-fault injection test is skipped"

lint: $(STAMP) $(BUF) ## ruff, mypy --strict, the layer contracts (lint-imports), buf lint.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache --no-logo
	cd protos && node_modules/.bin/buf lint

proto: $(STAMP) ## Regenerate ledger/v1, ledger/internal/v1 and payments/v1 from protos/ (the result is committed).
	$(BIN)/python -m grpc_tools.protoc -Iprotos \
	  --python_out=. --grpc_python_out=. \
	  --mypy_out=. --mypy_grpc_out=. \
	  --plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy \
	  --plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc \
	  $(PROTOS)

proto-check: proto ## Fail when the committed generated code differs from what `make proto` makes.
	git diff --exit-code -- ledger/v1 ledger/internal/v1 payments/v1 || \
	  (echo "generated code in ledger/v1, ledger/internal/v1 or payments/v1 is stale: run 'make proto' and commit" >&2; exit 1)
	test -z "$$(git status --porcelain -- ledger/v1 ledger/internal/v1 payments/v1)" || \
	  (echo "untracked generated files in ledger/v1, ledger/internal/v1 or payments/v1: run 'make proto' and commit" >&2; exit 1)

faults: $(STAMP) ## The seeded renewal fault-injection run, large (make test runs 1,000 renewals).
	POLICY_LEDGER_FAULT_RENEWALS=$${RENEWALS:-20000} $(BIN)/pytest -q -s --timeout=0 tests/payments/test_renewal.py -k seeded

fuzz: $(STAMP) ## The fuzz suite, large: 100,000 generated and mutated requests against a `serve` process, its memory checked apart (make test: 1,200, in-process).
	POLICY_LEDGER_FUZZ_SERVER_PROCESS=1 POLICY_LEDGER_FUZZ_CASES=$${CASES:-100000} $(BIN)/pytest -q -s --timeout=0 tests/fuzz

bench: $(STAMP) $(MO_FILES) ## Print throughput and latency figures (not a test: nothing fails on speed).
	$(BIN)/python -m bench

bench-fairness: $(STAMP) ## Only the fairness figures: the probe's p99 idle and under issue 15's loads.
	$(BIN)/python -m bench --only fairness --load-scale $${SCALE:-1}

bench-large: $(STAMP) ## Only the proof figures at 10M entries (ENTRIES=N for another size), next to 10k; TREE=FILE keeps the tree for the next run.
	$(BIN)/python -m bench --only proofs --entries $${ENTRIES:-10000000} $${TREE:+--proof-tree $$TREE}

bench-households: $(STAMP) $(MO_FILES) ## Only the household checks at each serve --workers count (POLICIES=N, default 1M; WORKERS=0,2), next to the empty-unary ceiling at 16 callers.
	$(BIN)/python -m bench --only households --policies $${POLICIES:-1000000} $${WORKERS:+--workers $$WORKERS}

bench-renewals: $(STAMP) $(MO_FILES) ## Only the renewals at 1 and 16 callers, on SQLite and PostgreSQL, at each serve --workers count (RENEWALS=N, WORKERS=0,2).
	$(BIN)/python -m bench --only renewals --renewals $${RENEWALS:-400} $${WORKERS:+--workers $$WORKERS}

bench-audit: $(STAMP) ## Only the full-audit figure (AUDIT_ENTRIES=N, default 1M), next to the verify ceiling.
	$(BIN)/python -m bench --only audit --audit-entries $${AUDIT_ENTRIES:-1000000}

bench-submit: $(STAMP) ## Only the submission figures, at serve --workers 0 and one worker per core (EVENTS=N, WORKERS=0,2).
	$(BIN)/python -m bench --only submit --events $${EVENTS:-20000} $${WORKERS:+--workers $$WORKERS}

bench-instances: $(STAMP) ## Only 1, 2, 3 serve instances on one PostgreSQL primary: rates, lock wait, commits (EVENTS=N each, WORKERS=W each).
	$(BIN)/python -m bench --only instances --instance-events $${EVENTS:-2000} --instance-workers $${WORKERS:-1}

bench-small: $(STAMP) ## The same benchmark on a small tree, for a quick look.
	$(BIN)/python -m bench --entries 20000 --events 2000 --policies 20000 --renewals 100 --audit-entries 20000 --standby-policies 2000 --cohort-members 2500

serve: $(STAMP) $(MO_FILES) ## Run the server on the embedded defaults: SQLite var/ledger.db, mTLS with var/pki.
	@test -f var/pki/ca.pem || $(BIN)/policy-ledger pki init --out var/pki
	@test -f var/log.key || $(BIN)/policy-ledger keygen --name policy-ledger.example/log --out var/log.key
	@test -f var/operator.key || $(BIN)/policy-ledger keygen --name operator --out var/operator.key
	$(BIN)/policy-ledger serve --tls-cert var/pki/server.pem --tls-key var/pki/server.key \
	  --client-ca var/pki/ca.pem --operator-verifier @var/operator.key.pub

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/pybabel compile -d ledger/i18n/locales -D ledger
	touch $(STAMP)

i18n: $(STAMP) $(MO_FILES) ## Compile the gettext catalogues (.po -> .mo; make install does it too).

# A catalogue is recompiled whenever its .po changes (after a pull, not only at install).
ledger/i18n/locales/%/LC_MESSAGES/ledger.mo: ledger/i18n/locales/%/LC_MESSAGES/ledger.po | $(STAMP)
	$(BIN)/pybabel compile -i $< -o $@ --statistics

i18n-extract: $(STAMP) ## Re-extract message ids to ledger.pot and merge them into every .po.
	$(BIN)/pybabel extract --no-default-keywords -k N_ --no-location --project=policy-ledger \
	  -o ledger/i18n/locales/ledger.pot ledger/i18n/messages.py
	# No --no-location here: pybabel 2.18's update has no such flag (the template has no
	# locations, so none are written); update keeps every translation, in the template's order.
	$(BIN)/pybabel update --width=100 -d ledger/i18n/locales -D ledger \
	  -i ledger/i18n/locales/ledger.pot

$(BUF): protos/package.json protos/package-lock.json
	# `npm install --no-save`, not `npm ci`: the registry this project reaches serves only some of
	# buf's per-platform optional packages, so the lock file lists those and `npm ci` calls it stale.
	# The version and integrity hashes still come from package.json and package-lock.json.
	cd protos && npm install --no-save --no-audit --no-fund --loglevel=error
	touch $(BUF)

# The verification page (docs/verify-page.md): its JS libraries and bundler, pinned by
# web/package-lock.json; the built page ledger/verify_page/verify.html is committed.
WEB_STAMP := web/node_modules/.installed

web: $(WEB_STAMP) ## Install the verification page's pinned JS libraries (web/node_modules).

$(WEB_STAMP): web/package.json web/package-lock.json
	# --no-save, as for protos/: the lock file lists esbuild's per-platform packages, npm fetches ours.
	cd web && npm install --no-save --no-audit --no-fund --loglevel=error
	touch $(WEB_STAMP)

verify-page: $(STAMP) $(WEB_STAMP) ## Rebuild ledger/verify_page/verify.html from web/verify (commit it).
	$(BIN)/python -m ledger.verify_page.build

chromium: ## Debian's chromium, for the verification page's browser tests.
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) \
	  || echo "chromium could not be installed: the verification page's browser tests are skipped"

clean:
	rm -rf $(VENV) protos/node_modules web/node_modules var .mypy_cache .ruff_cache .pytest_cache

.PHONY: bench-standby
bench-standby: $(STAMP) $(MO_FILES) ## Only the read-standby figures: household checks from a PostgreSQL primary and its hot standby.
	$(BIN)/python -m bench --only standby --standby-policies $${POLICIES:-100000}
