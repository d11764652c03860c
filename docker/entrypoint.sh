#!/usr/bin/env bash
# Entry point of the seg_node images: sources ROS 2 and the seg_node workspace, then
#   - with no arguments, or arguments of the form name:=value, runs
#     `ros2 launch seg_node segment.launch.py ARGUMENTS...`;
#   - otherwise runs the arguments as a command (`bash`, `ros2 bag record ...`, the health check).
# ROS_SETUP names ROS 2's setup script where it is not /opt/ros/$ROS_DISTRO/setup.bash (source builds).
set -eo pipefail  # no -u: the ROS setup scripts read unset variables

# shellcheck source=/dev/null
source "${ROS_SETUP:-/opt/ros/${ROS_DISTRO:?ROS_DISTRO is not set}/setup.bash}"
# shellcheck source=/dev/null
source "${SEG_NODE_WS:?SEG_NODE_WS is not set}/install/setup.bash"

if [[ $# -gt 0 && "$1" != *:=* ]]; then
    exec "$@"
fi
exec ros2 launch seg_node segment.launch.py "$@"
