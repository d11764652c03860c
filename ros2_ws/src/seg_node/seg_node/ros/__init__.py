"""The ROS 2 adapter: the only part of seg_node that imports rclpy."""

import os

# On the car the node shares its cores with other processes; OpenMP threads that spin while waiting then
# stall for whole scheduler slices (seg-bench measured eager PyTorch 10-50x slower). Must precede torch's import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
