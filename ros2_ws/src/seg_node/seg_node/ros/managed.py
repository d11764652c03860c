"""ManagedNode: rclpy's LifecycleNode with two repairs a long-running managed node needs.

* A transition the current state does not allow is answered ``success: false`` with a warning. rclpy before
  Kilted (Humble's and Jazzy's) lets that transition's RCLError escape the change_state service callback,
  which ends the executor's spin and so the node's process: a lifecycle manager that repeats a request (its
  first answer came late, or ``ros2 lifecycle set`` twice) killed the node. Kilted's rclpy answers false
  itself (ros2/rclpy#1319); there the wrapper never sees the error.
* ``destroy_node`` also destroys the lifecycle state machine. rclpy's LifecycleNode (Humble to Kilted) leaves
  it holding the node's handle, so the DDS participant outlives the node until garbage collection, which a
  process ending in ``os._exit`` never reaches: every run left its Fast DDS shared-memory segment in
  /dev/shm (RAM; 64 MiB with config/fastdds_shm.xml) until the next reboot.

Only rclpy API that Humble has is used.
"""

from __future__ import annotations

from typing import Any

from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import LifecycleNode

# the transitions a lifecycle manager requests, by lifecycle_msgs id, for log lines
TRANSITION_NAMES = {
    Transition.TRANSITION_CONFIGURE: "configure",
    Transition.TRANSITION_CLEANUP: "cleanup",
    Transition.TRANSITION_ACTIVATE: "activate",
    Transition.TRANSITION_DEACTIVATE: "deactivate",
    Transition.TRANSITION_UNCONFIGURED_SHUTDOWN: "shutdown",
    Transition.TRANSITION_INACTIVE_SHUTDOWN: "shutdown",
    Transition.TRANSITION_ACTIVE_SHUTDOWN: "shutdown",
}


class ManagedNode(LifecycleNode):
    def __init__(self, node_name: str, **node_kwargs: Any) -> None:
        super().__init__(node_name, **node_kwargs)
        self._refuse_disallowed_transitions()

    def destroy_node(self) -> None:
        """Node.destroy_node, and the lifecycle state machine with it (see the module's docstring)."""
        super().destroy_node()
        self._state_machine.destroy_when_not_in_use()

    def _refuse_disallowed_transitions(self) -> None:
        service = getattr(self, "_service_change_state", None)  # absent without the lifecycle services
        if service is None:
            return
        change_state = service.callback

        def change_state_or_refuse(request: ChangeState.Request, response: ChangeState.Response
                                   ) -> ChangeState.Response:
            try:
                return change_state(request, response)
            except _rclpy.RCLError as error:
                transition = request.transition.label or TRANSITION_NAMES.get(request.transition.id,
                                                                               f"#{request.transition.id}")
                self.get_logger().warn(
                    f"refused the lifecycle transition {transition} in state "
                    f"{self._state_machine.current_state[1]}: "
                    f"{str(error).split(', at ')[0]}"  # rcl's message without its source location
                )
                response.success = False
                return response

        service.callback = change_state_or_refuse
