"""Pure control logic (numpy + stdlib; never torch or rclpy): chunk scheduling, limits, watchdog."""
