"""Where the package's shipped files live, in a source checkout and in a colcon install."""

from __future__ import annotations

from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT_NAME = "deepvision_sim"


def share_dir() -> Path:
    """The source tree when running from a checkout, else the installed share/vla_ros."""
    if (PACKAGE_ROOT / "package.xml").exists():
        return PACKAGE_ROOT
    from ament_index_python.packages import get_package_share_directory  # only in installed use

    return Path(get_package_share_directory("vla_ros"))


def default_checkpoint_dir() -> Path:
    return share_dir() / "models" / DEFAULT_CHECKPOINT_NAME


def config_file(name: str) -> Path:
    return share_dir() / "config" / name
