"""seg_node: real-time semantic segmentation for ROS 2 with CGNet and ContextNet.

Layers, each importable on its own: ``seg_node.models`` (pure PyTorch),
``seg_node.engine`` (inference backends and the transfer pipeline, no ROS),
``seg_node.ros`` (the rclpy adapter) and ``seg_node.tools`` (training,
evaluation, replay, export; never imported by the node).
"""

__version__ = "0.1.0"
