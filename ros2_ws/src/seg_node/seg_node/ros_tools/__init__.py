"""ROS 2 developer tools beside the node: bag player, recorder, healthcheck, measurements, the demo.

They import rclpy and the layers below; the node never imports them.
"""
