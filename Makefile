# adaptnn — the interface. `make help` lists the targets.
# Every target that needs the environment installs it first, so each works on a fresh clone.

SHELL := /bin/bash
.DEFAULT_GOAL := help
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
RUN := $(UV) run --locked --all-packages
PACKAGES := $(notdir $(wildcard packages/*))
PACKAGE ?=
VERSION ?=
BENCH_ARGS ?=

.PHONY: help install demo demo-gpt docs docs-serve workflows test test-slow test-compile lint format typecheck check bench bench-quick build smoke bump versions

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: ## bootstrap uv if missing, then `uv sync --locked` (all packages, dev group)
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --locked --all-packages

demo: install ## the main job: all five libraries in one model, examples/all_five.py (1–2 min on 2 CPU cores)
	$(RUN) python examples/all_five.py $(DEMO_ARGS)

demo-gpt: install ## the single-model demo: the reference GPT on the embedded corpus (1–2 min on 2 CPU cores)
	$(RUN) python -m benchmarks.demo $(DEMO_ARGS)

test: install ## run every test except the slow and gpu ones
	$(RUN) python scripts/run_pytest.py -q

test-slow: install ## run every test including the slow ones (--runslow)
	$(RUN) python scripts/run_pytest.py -q --runslow

test-compile: install ## only the slow tests: torch.compile(fullgraph=True) with inductor (CI runs them)
	$(RUN) python scripts/run_pytest.py -q --runslow -m slow

lint: install ## ruff check and ruff format --check
	$(RUN) ruff check .
	$(RUN) ruff format --check .

format: install ## ruff format and safe fixes
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

typecheck: install ## mypy --strict per package, then the benchmarks, scripts and examples
	@set -e; for pkg in $(PACKAGES); do \
		echo "mypy --strict packages/$$pkg/src"; \
		$(RUN) mypy --strict packages/$$pkg/src; \
	done
	$(RUN) mypy --strict benchmarks scripts examples

versions: install ## check that all packages share one version and internal pins admit it
	$(RUN) python scripts/check_versions.py

workflows: install ## actionlint on the GitHub workflows (the release workflow)
	$(RUN) actionlint .github/workflows/*.yml

check: lint typecheck versions workflows test ## lint + typecheck + version and workflow checks + tests

bench: install ## every benchmark at its default (CPU) size; BENCH_ARGS="--quick" for smoke sizes
	@set -e; for b in benchmarks/bench_*.py; do \
		mod=$$(basename $$b .py); echo "== $$mod $(BENCH_ARGS)"; \
		$(RUN) python -m benchmarks.$$mod $(BENCH_ARGS); \
	done

bench-quick: ## every benchmark at its --quick size, results into a scratch folder (what CI runs)
	out=$${BENCH_OUT:-$$(mktemp -d)}; echo "quick results go to $$out"; \
	$(MAKE) bench BENCH_ARGS="--quick --no-progress --out $$out"

build: install ## build wheels and sdists into dist/ (PACKAGE=name for one package)
	rm -rf dist
	@if [ -n "$(PACKAGE)" ]; then \
		$(UV) build --no-sources --package $(PACKAGE) -o dist; \
	else \
		$(UV) build --no-sources --all-packages -o dist; \
	fi

smoke: build ## twine check (READMEs render on PyPI), then each wheel alone in a fresh venv, used
	$(RUN) twine check --strict dist/*
	$(RUN) python scripts/smoke.py dist

docs: install ## build the documentation site into site/ with mkdocs --strict (mkdocs.yml)
	NO_MKDOCS_2_WARNING=1 $(RUN) mkdocs build --strict

docs-serve: install ## serve the documentation site locally with live reload
	NO_MKDOCS_2_WARNING=1 $(RUN) mkdocs serve

bump: install ## set every package version: make bump VERSION=x.y.z
	@test -n "$(VERSION)" || (echo "usage: make bump VERSION=x.y.z" && exit 2)
	$(RUN) python scripts/bump_version.py $(VERSION)
	$(UV) lock
	$(RUN) python scripts/check_versions.py
