# The two commands: `make run` (set up, then open the app) and `make test` (set up, then every test).
.PHONY: run test setup

setup:
	@bash scripts/setup.sh

run: setup
	.venv/bin/python main.py

test: setup
	.venv/bin/ruff check .
	QT_QPA_PLATFORM=offscreen .venv/bin/python -m pytest
