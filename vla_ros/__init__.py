"""vla_ros: DeepVision-VLA on a ROS 2 robot arm.

Imports flow one way: types/config/errors -> model/control/recording/sim -> training -> ros, analysis ->
apps (demo, collect, evaluate, dagger, two_hosts); .importlinter states the layers and
test/test_architecture.py enforces them.
"""

__version__ = "0.1.0"
