"""Accuracy and speed of the engine, offline: data-set evaluation, rosbag replay, reports and benchmarks.

Frames run through the same engine the node uses; nothing here imports rclpy.
"""
