"""``python -m seg_node [--ros-args ...]``: the ROS 2 node, as ``ros2 run seg_node seg_node`` starts it."""

import sys

from seg_node.ros.node import main

sys.exit(main())
