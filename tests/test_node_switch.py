"""A model switch without a restart (#43 item 4): the parameters read at configure (weights, backend,
precision, device, the network size, the cameras, ...) may be set while the node is unconfigured, and
cleanup -> configure -> activate applies them; set on an active node, they are refused with the cycle to
run. Over DDS, through the lifecycle and parameter services, from CGNet to ContextNet."""

from __future__ import annotations

import sys

import pytest
import ros_helpers as ros
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from rcl_interfaces.msg import Parameter as ParameterMessage
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters

DOMAIN = ros.domain_id(offset=71)


def set_parameters(probe: ros.Probe, **values: object) -> tuple[bool, str]:
    """(successful, reason) of setting ``values`` (strings, integers or string lists) in one request."""
    def value(given: object) -> ParameterValue:
        if isinstance(given, list):
            return ParameterValue(type=ParameterType.PARAMETER_STRING_ARRAY, string_array_value=given)
        if isinstance(given, int):
            return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=given)
        return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(given))

    request = SetParameters.Request(parameters=[ParameterMessage(name=n, value=value(v)) for n, v in values.items()])
    results = probe.call(SetParameters, "/seg_node/set_parameters", request).results
    return all(r.successful for r in results), "; ".join(r.reason for r in results if r.reason)


def engine_model(probe: ros.Probe, architecture: str) -> dict[str, str]:
    def matches(array: DiagnosticArray) -> bool:
        return any(s.name == "/seg_node: engine" and any(kv.key == "model" and kv.value.startswith(architecture)
                                                        for kv in s.values) for s in array.status)

    array = probe.wait_for("/diagnostics", matches)
    (status,) = [s for s in array.status if s.name == "/seg_node: engine"]
    return {kv.key: kv.value for kv in status.values}


@pytest.mark.slow  # a node process over DDS
def test_switch_from_cgnet_to_contextnet_through_the_lifecycle(make_weights, tmp_path):
    cgnet, contextnet = make_weights(tmp_path, "cgnet"), make_weights(tmp_path, "contextnet")
    command = [sys.executable, "-m", "seg_node", "--ros-args", "-p", f"weights:={cgnet}", "-p", "backend:=torch",
               "-p", "device:=cpu", "-p", "threads:=1", "-p", "cameras:=[before]", "-p", "diagnostics_period_s:=0.5"]
    probe = ros.Probe(DOMAIN, "switch_probe")
    probe.subscribe(DiagnosticArray, "/diagnostics")
    log = tmp_path / "node.log"
    try:
        with ros.running_group(command, ros.node_environment(DOMAIN), log) as process:
            probe.wait_for_publisher("/seg_node/before/label")
            probe.send_until_labelled("/before", "/seg_node/before/label", "cgnet_frame")
            assert engine_model(probe, "cgnet")["input_resolution"] == "128x96"

            successful, reason = set_parameters(probe, weights=str(contextnet))
            assert not successful
            assert reason == ("weights: read at configure, and the node is active; apply through the lifecycle: "
                              "ros2 lifecycle set /seg_node deactivate, then cleanup; set the parameters; then "
                              "configure and activate")
            assert not set_parameters(probe, autostart=False)[0]  # read at start only: read-only

            assert probe.change_state(Transition.TRANSITION_DEACTIVATE)
            assert probe.change_state(Transition.TRANSITION_CLEANUP)
            assert probe.lifecycle_state() == "unconfigured"
            refused, reason = set_parameters(probe, backend="tensorflow")
            assert not refused and reason.startswith("backend: 'tensorflow' is not one of auto, ")
            assert set_parameters(probe, weights=str(contextnet), cameras=["after"], network_height=64,
                                  network_width=96) == (True, "")
            assert probe.change_state(Transition.TRANSITION_CONFIGURE)
            assert probe.change_state(Transition.TRANSITION_ACTIVATE)

            values = engine_model(probe, "contextnet")
            assert values["cameras"] == "after" and values["input_resolution"] == "96x64"
            assert values["weights"] == str(contextnet)
            probe.wait_for_publisher("/seg_node/after/label", ros.WAIT_S)
            sent, label = probe.send_until_labelled("/after", "/seg_node/after/label", "contextnet_frame")
            assert label.header == sent.header and (label.height, label.width) == (sent.height, sent.width)
            assert probe.publishers("/seg_node/before/label") == 0
            ros.assert_clean_stop(process, log)
    finally:
        probe.close()
    output = log.read_text()
    assert "configured: contextnet" in output, output[-3000:]
