# Shorthands for the README commands (plain `python3` + venv; nothing else needed).
.PHONY: venv demo test typecheck bench clean

venv:
	python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]'

demo: venv
	.venv/bin/featurestore demo

test: venv
	.venv/bin/python -m pytest

typecheck: venv
	.venv/bin/python -m mypy featurestore benchmarks tests

bench: venv
	.venv/bin/python -m benchmarks --quick

clean:
	rm -rf .venv build *.egg-info .pytest_cache .mypy_cache feature_defs/.featurestore
