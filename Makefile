# fnbench — the two commands a newcomer needs:
#   make demo        set up, build the functions, compare Rust with Go/Node/Python/Java
#   make test        set up and run every test (what CI runs)
# and `make calibrate` to check fnbench's accuracy on this machine.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed


.PHONY: lambda-ric lambda-demo lambda-pc-demo setup functions java-offline demo calibrate example test unit lint bench lock clean vendor-uplot \
        system-demo system-lambda-demo system-test otelcol

# What the machine needs beyond Python (toolchains checked; Debian packages installed, asking for root
# only there): scripts/setup-system.sh says what it installs. FNBENCH_NO_INSTALL=1 only checks.
system-demo system-lambda-demo system-test: system-%:
	scripts/setup-system.sh $*

$(STAMP): requirements.lock pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

# system-demo: the Debian packages rust-wasm's guest compiles with (a fresh machine has none).
functions: setup system-demo
	$(BIN)/fnbench functions build

# The Java jar rebuilt by Maven in offline mode: once ~/.m2 holds the pinned set of
# functions/java/pom.xml, the build repeats without the network.
java-offline:
	cd functions/java && mvn -o -B -q package

demo: system-demo functions
	$(BIN)/fnbench run examples/local-compare.yaml

calibrate: setup
	$(BIN)/fnbench calibrate

# Serve the synthetic target, run the example spec against it, stop the target.
example: setup
	$(BIN)/fnbench synthetic --port 18080 & pid=$$!; sleep 1; \
	$(BIN)/fnbench run examples/loopback.yaml; rc=$$?; kill $$pid; exit $$rc

lint: setup
	$(BIN)/ruff check orchestrator workers lambda_emulator tests bench
	$(BIN)/mypy orchestrator workers lambda_emulator

unit: setup
	$(BIN)/pytest tests/unit -q

# AWS's Node.js runtime interface client; its native part builds with autotools and cmake.
RIC := lambda_emulator/node-ric/node_modules/aws-lambda-ric/dist/rapid-client.node
$(RIC): lambda_emulator/node-ric/package-lock.json
	cd lambda_emulator/node-ric && npm ci --no-audit --no-fund --loglevel=error
	test -f $(RIC)

lambda-ric: $(RIC)

# The AWS Lambda demo on this machine: a local Lambda, the functions deployed to it with the same
# command as to AWS, then Rust vs Go/Node/Python (warm, forced cold starts, cost) and a memory sweep.
LAMBDA_PORT ?= 9001
LAMBDA_SPECS ?= examples/lambda-compare.yaml examples/lambda-sweep.yaml
# The local Lambda takes only requests signed with the key it is started with: the server and its
# clients get the same one.
LAMBDA_ENV := env -u AWS_PROFILE -u AWS_SESSION_TOKEN -u FNBENCH_LAMBDA_ACCESS_KEY_ID -u FNBENCH_LAMBDA_SECRET_ACCESS_KEY \
  AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local
lambda-demo: system-lambda-demo functions lambda-ric
	$(LAMBDA_ENV) $(BIN)/fnbench lambda serve --functions none --port $(LAMBDA_PORT) --reserved 16 & pid=$$!; \
	trap "kill $$pid 2>/dev/null" EXIT; \
	for i in $$(seq 150); do $(BIN)/python -c "import socket; socket.create_connection(('127.0.0.1', $(LAMBDA_PORT)), 1)" \
	  2>/dev/null && break; sleep 0.2; done; \
	$(LAMBDA_ENV) $(BIN)/fnbench functions deploy rust go node python --endpoint-url http://127.0.0.1:$(LAMBDA_PORT) \
	  --region us-east-1 --role arn:aws:iam::000000000000:role/fnbench && \
	for spec in $(LAMBDA_SPECS); do $(LAMBDA_ENV) $(BIN)/fnbench run $$spec --metrics-port 0 || exit $$?; done

# Rust on demand, Java on demand and Java with provisioned concurrency on the local Lambda (issue 22):
# warm p99, cold p50 and cost per million of each (bench/lambda_provisioned_demo.py).
lambda-pc-demo: system-lambda-demo functions
	$(BIN)/python bench/lambda_provisioned_demo.py

# The OpenTelemetry Collector the OTLP export tests send to (tools/otelcol: an OTLP receiver and the file
# exporter, every Go module pinned by its go.mod/go.sum); rebuilt only when those files change.
OTELCOL := build/tools/otelcol
$(OTELCOL): tools/otelcol/go.mod tools/otelcol/go.sum $(wildcard tools/otelcol/*.go)
	mkdir -p $(@D)
	cd tools/otelcol && go build -mod=readonly -trimpath -buildvcs=false -ldflags='-s -w' -o $(CURDIR)/$@.tmp .
	mv -f $@.tmp $@

otelcol: $(OTELCOL)

# Every test runs: FNBENCH_TEST_STRICT makes a missing server, browser or build a failure, not a skip
# (this target installed them); -rs lists any skip that remains, with its reason, at the end.
test: system-test functions lambda-ric otelcol lint
	PATH="$(CURDIR)/build/tools:$$PATH" FNBENCH_TEST_STRICT=1 $(BIN)/pytest -q -rs

# The chart library inlined into HTML reports (checked in; nothing is fetched at build or test time).
UPLOT ?= 1.6.32
VENDOR := orchestrator/report/vendor
vendor-uplot:
	cd $(VENDOR) && npm install --save-exact --no-audit --no-fund --loglevel=error uplot@$(UPLOT)
	cp $(VENDOR)/node_modules/uplot/dist/uPlot.iife.min.js $(VENDOR)/node_modules/uplot/dist/uPlot.min.css \
	   $(VENDOR)/node_modules/uplot/LICENSE $(VENDOR)/

bench: setup
	$(BIN)/python bench/throughput.py

lock:
	$(BIN)/pip freeze --exclude-editable | grep -v '^-e ' > requirements.lock

clean:
	rm -rf $(VENV) results build .pytest_cache .mypy_cache .ruff_cache
