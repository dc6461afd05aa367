# The two commands a newcomer needs: `make run` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON := $(shell scripts/find-python.sh)
UV_VERSION := 0.13.9
UV := .tools/bin/uv
export UV_PROJECT_ENVIRONMENT := .venv

.PHONY: run test install canvas lint typecheck bench bench-track bench-engine bench-send clean

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

.venv/.installed: pyproject.toml uv.lock .tools/bin/uv
	$(UV) sync --frozen --python $(PYTHON)
	touch $@

install: .venv/.installed

# The admin canvas and template editor (static/canvas, static/editor -> static/dist): npm ci with the committed lock, then esbuild.
CANVAS_SOURCES := $(wildcard static/canvas/* static/editor/*)
node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { echo "The admin canvas needs Node.js and npm (e.g. apt-get install nodejs npm)."; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

static/dist/.built: node_modules/.installed $(CANVAS_SOURCES)
	npm run --silent build
	touch $@

canvas: static/dist/.built

run: install canvas
	@DEBUG=$${DEBUG:-true} .venv/bin/python manage.py migrate --no-input -v0
	@DEBUG=$${DEBUG:-true} .venv/bin/python manage.py collectstatic --no-input -v0
	@DEBUG=$${DEBUG:-true} .venv/bin/python manage.py demo
	@DEBUG=$${DEBUG:-true} .venv/bin/honcho start -f Procfile

test: install canvas
	scripts/test.sh

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

typecheck: install
	DEBUG=true .venv/bin/mypy workflows_app contacts_app templates_app config bench

bench-track: install
	.venv/bin/python bench/track.py

bench-engine: install
	.venv/bin/python bench/engine.py

bench-send: install
	.venv/bin/python bench/send.py

# Every benchmark, one after another, each printing its figures next to the goals of the issues
# (README, Benchmarks). About 15-20 minutes on 2 cores: track 4-5, engine 6-8, send about 4
# (10 when sends do not overlap). Each creates its own database and drops it.
bench: install
	.venv/bin/python bench/track.py
	.venv/bin/python bench/engine.py
	.venv/bin/python bench/send.py

clean:
	rm -rf .venv .tools staticfiles node_modules static/dist
