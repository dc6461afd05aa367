# The two commands a newcomer needs: `make run` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON := $(shell scripts/find-python.sh)
UV_VERSION := 0.13.9
UV := .tools/bin/uv
export UV_PROJECT_ENVIRONMENT := .venv

.PHONY: run test install lint typecheck bench-track bench-engine clean

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

.venv/.installed: pyproject.toml uv.lock .tools/bin/uv
	$(UV) sync --frozen --python $(PYTHON)
	touch $@

install: .venv/.installed

run: install
	@DEBUG=$${DEBUG:-true} .venv/bin/python manage.py migrate --no-input -v0
	@DEBUG=$${DEBUG:-true} .venv/bin/python manage.py collectstatic --no-input -v0
	@DEBUG=$${DEBUG:-true} .venv/bin/python manage.py demo
	@DEBUG=$${DEBUG:-true} .venv/bin/honcho start -f Procfile

test: install
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

clean:
	rm -rf .venv .tools staticfiles
