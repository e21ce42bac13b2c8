import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "vla_ros"
NODES = ["policy_node", "safety_node", "recorder_node", "sim_robot_node", "scripted_teleop_node",
         "teleop_node"]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/models", [f for f in glob("models/*") if "." in f.rsplit("/", 1)[-1]]),
        # one entry per checkpoint directory: data_files does not keep subfolders (nor should it: onnx/ beside
        # a checkpoint is this machine's export cache, not part of the checkpoint)
        *[(f"share/{PACKAGE}/{d}", [f for f in glob(f"{d}/*") if os.path.isfile(f)])
          for d in sorted(p.rstrip("/") for p in glob("models/*/"))],
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="vla_ros maintainers",
    maintainer_email="maintainers@vla-ros.dev",
    description="DeepVision-VLA policy, safety, recorder and simulated-arm nodes for ROS 2.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [f"{node} = {PACKAGE}.ros.{node}:main" for node in NODES]
        + ["vla_ros_demo = vla_ros.apps.demo:main"],
    },
)
