"""The offline trainer that produces the weights in ``weights/``; nothing here imports rclpy."""
