"""What a person runs (demo, collect, evaluate, dagger, two_hosts) and the process orchestration they share
(sessions over ROS, node processes, network namespaces). Nothing below this package imports it."""
