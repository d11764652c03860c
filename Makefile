# Two commands do all the set-up: `make demo` and `make test` create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
# ROS 2 Jazzy's launch, launch_ros and ros2 command-line tools as wheels beside the project (see their README),
# with colcon from PyPI: what `ros2 launch seg_node segment.launch.py` and tests/test_ros2_cli.py need.
ROS_TOOLS_WHEELS := ../shared/wheels/ros2-jazzy-tools
ROS_TOOLS := $(VENV)/.ros-tools
# A second environment with ROS 2 Kilted from PyPI, in which the node's tests run again.
KILTED_VENV := .venv-kilted
KILTED_PY := $(KILTED_VENV)/bin/python
KILTED := $(KILTED_VENV)/.installed
KILTED_TESTS := tests/test_node.py tests/test_node_smoke.py tests/test_kilted.py

.PHONY: venv ros-tools kilted demo test test-kilted summary clean

$(INSTALLED): requirements.txt ros2_ws/src/seg_node/setup.py ros2_ws/src/seg_node/package.xml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e ros2_ws/src/seg_node
	touch $@

venv: $(INSTALLED)

# Without the wheels nothing is installed (and tests/test_ros2_cli.py skips, saying why); make tries again next time.
$(ROS_TOOLS): $(INSTALLED) requirements-ros-tools.txt $(wildcard $(ROS_TOOLS_WHEELS)/*.whl)
	$(PY) -m pip install --quiet -r requirements-ros-tools.txt
	@if ls $(ROS_TOOLS_WHEELS)/*.whl >/dev/null 2>&1; then \
		echo "$(PY) -m pip install --quiet --no-deps $(ROS_TOOLS_WHEELS)/*.whl"; \
		$(PY) -m pip install --quiet --no-deps $(ROS_TOOLS_WHEELS)/*.whl && touch $@; \
	else \
		echo "NOTE: no wheels in $(ROS_TOOLS_WHEELS): no ros2 launch/ros2 CLI in $(VENV), their tests will skip"; \
	fi

ros-tools: $(ROS_TOOLS)

# Where PyPI's ROS 2 Kilted wheels (with their binary dependencies) do not resolve for this Python or machine,
# .venv-kilted/.unavailable says why and test-kilted skips with that reason; any other install failure fails.
$(KILTED): requirements-kilted.txt ros2_ws/src/seg_node/setup.py ros2_ws/src/seg_node/package.xml
	rm -f $(KILTED_VENV)/.unavailable
	test -x $(KILTED_PY) || $(PYTHON) -m venv $(KILTED_VENV)
	$(KILTED_PY) -m pip install --quiet --upgrade pip
	@if $(KILTED_PY) -m pip install --quiet --dry-run $$(grep '^ros-kilted-' requirements-kilted.txt) \
			>$(KILTED_VENV)/.probe 2>&1; then \
		echo "$(KILTED_PY) -m pip install --quiet -r requirements-kilted.txt"; \
		$(KILTED_PY) -m pip install --quiet -r requirements-kilted.txt && \
		$(KILTED_PY) -m pip install --quiet --no-deps --no-build-isolation -e ros2_ws/src/seg_node; \
	else \
		echo "no ROS 2 Kilted wheels on PyPI for $$($(KILTED_PY) -V) on $$(uname -m):" \
			"$$(grep -m1 -E '^ERROR' $(KILTED_VENV)/.probe)" > $(KILTED_VENV)/.unavailable; \
	fi
	touch $@

kilted: $(KILTED)

# The node's tests again, on ROS 2 Kilted (no launch or ros2 CLI there: those wheels are Jazzy's).
test-kilted: $(KILTED)
	@if [ -f $(KILTED_VENV)/.unavailable ]; then \
		echo "SKIPPED the ROS 2 Kilted run: $$(cat $(KILTED_VENV)/.unavailable)"; \
	else \
		echo "$(KILTED_PY) -m pytest $(KILTED_TESTS)"; \
		$(KILTED_PY) -m pytest $(KILTED_TESTS); \
	fi

# The bundled recording through player -> node -> recorder over DDS; figures and files in out/demo/.
# DEMO_ARGS passes options, e.g. make demo DEMO_ARGS="--model contextnet".
demo: $(INSTALLED)
	$(PY) -m seg_node.cli.demo $(DEMO_ARGS)

# Everything on ROS 2 Jazzy (.venv, with colcon and ros2 launch), then the node's tests on Kilted (.venv-kilted).
test: $(INSTALLED) ros-tools $(KILTED)
	$(PY) -m ruff check .
	$(PY) -m pytest
	$(MAKE) --no-print-directory test-kilted

summary: $(INSTALLED)
	$(PY) -m seg_node.cli.models --summary

clean:
	rm -rf $(VENV) $(KILTED_VENV) out
