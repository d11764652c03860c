"""``python -m seg_node [--ros-args ...]``: the ROS 2 node, as ``ros2 run seg_node seg_node`` starts it."""

from seg_node.ros.process import main

main()
