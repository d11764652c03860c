"""rosbag2 recordings without ROS: read and write MCAP and sqlite3 bags of camera images and labels.

Shared by the offline evaluation and the ROS developer tools; nothing here imports rclpy.
"""
