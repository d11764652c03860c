"""Offline tools with console entry points: training, evaluation, benchmarks, replay, recordings.

The node never imports this package; nothing here imports rclpy.
"""
