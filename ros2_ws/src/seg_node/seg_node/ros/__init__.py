"""The ROS 2 adapter: the only part of seg_node that imports rclpy."""
