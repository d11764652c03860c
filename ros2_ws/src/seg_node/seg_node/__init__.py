"""seg_node: real-time semantic segmentation for ROS 2 with CGNet and ContextNet.

Layers, each importing only the ones below it (tests/test_layers.py enforces it):

    cli/                    thin console scripts
    ros_tools/              rclpy developer tools: bag player, recorder, healthcheck, measure, demo
    ros/                    the node: the only rclpy code the car runs
    evaluation/, training/  offline accuracy and speed; the trainer (no rclpy)
    recording/              rosbag2 read and write (no ROS)
    engine/                 inference backends and the transfer pipeline (no ROS)
    weights, datasets, imaging, metrics, plots
    models/                 CGNet and ContextNet, pure PyTorch
"""

__version__ = "0.1.0"
