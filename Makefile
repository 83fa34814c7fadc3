# The README's two commands: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test test-deps lint snippet clean

$(BIN)/trackpixel: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[clickhouse]'
	touch $@

# The test tools (pytest, Playwright, chdb) are installed only for `make test`.
$(VENV)/.test-installed: $(BIN)/trackpixel
	$(BIN)/pip install --quiet -e '.[clickhouse,test]'
	touch $@

## run: install into .venv, create ./trackpixel-data with a demo site, serve on 127.0.0.1:8000
run: $(BIN)/trackpixel
	$(BIN)/trackpixel quickstart --collector http://$(HOST):$(PORT)
	$(BIN)/trackpixel serve --host $(HOST) --port $(PORT)

## test: install the test servers and browser when missing, then run the whole suite
test: $(VENV)/.test-installed test-deps
	$(BIN)/python -m pytest

test-deps:
	sh scripts/install-test-deps.sh

lint: $(VENV)/.test-installed
	$(BIN)/ruff check trackpixel tests bench
	$(BIN)/mypy trackpixel

## snippet: rebuild trackpixel/collector/static/t.min.js from t.js
snippet:
	sh scripts/build-snippet.sh

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
