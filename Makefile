# Two commands do all the set-up: `make demo` and `make test` create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: venv demo test summary clean

$(INSTALLED): requirements.txt ros2_ws/src/seg_node/setup.py ros2_ws/src/seg_node/package.xml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e ros2_ws/src/seg_node
	touch $@

venv: $(INSTALLED)

# The bundled recording through player -> node -> recorder over DDS; figures and files in out/demo/.
# DEMO_ARGS passes options, e.g. make demo DEMO_ARGS="--model contextnet".
demo: $(INSTALLED)
	$(PY) -m seg_node.cli.demo $(DEMO_ARGS)

test: $(INSTALLED)
	$(PY) -m ruff check .
	$(PY) -m pytest

summary: $(INSTALLED)
	$(PY) -m seg_node.models --summary

clean:
	rm -rf $(VENV) out
