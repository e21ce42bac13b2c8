"""Thin rclpy adapters: message conversion, parameter binding and the nodes. No algorithms here."""
