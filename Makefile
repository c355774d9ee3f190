# fnbench — the two commands a newcomer needs:
#   make demo        set up, build the functions, compare Rust with Go/Node/Python/Java
#   make test        set up and run every test (what CI runs)
# and `make calibrate` to check fnbench's accuracy on this machine.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed


.PHONY: lambda-ric setup functions java-offline demo calibrate example test unit lint bench lock clean vendor-uplot

$(STAMP): requirements.lock pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

functions: setup
	$(BIN)/fnbench functions build

# The Java jar rebuilt by Maven in offline mode: once ~/.m2 holds the pinned set of
# functions/java/pom.xml, the build repeats without the network.
java-offline:
	cd functions/java && mvn -o -B -q package

demo: functions
	$(BIN)/fnbench run examples/local-compare.yaml

calibrate: setup
	$(BIN)/fnbench calibrate

# Serve the synthetic target, run the example spec against it, stop the target.
example: setup
	$(BIN)/fnbench synthetic --port 18080 & pid=$$!; sleep 1; \
	$(BIN)/fnbench run examples/loopback.yaml; rc=$$?; kill $$pid; exit $$rc

lint: setup
	$(BIN)/ruff check orchestrator workers tests bench
	$(BIN)/mypy orchestrator workers

unit: setup
	$(BIN)/pytest tests/unit -q

# AWS's Node.js runtime interface client; its native part builds with autotools and cmake.
RIC := tests/lambda-ric/node_modules/aws-lambda-ric/dist/rapid-client.node
$(RIC): tests/lambda-ric/package-lock.json
	cd tests/lambda-ric && npm ci --no-audit --no-fund --loglevel=error
	test -f $(RIC)

lambda-ric: $(RIC)

test: functions lambda-ric lint
	$(BIN)/pytest -q

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
