"""One small error hierarchy; callers catch VlaRosError at the ROS boundary."""


class VlaRosError(Exception):
    """Base class: every error the package raises on purpose."""


class ConfigError(VlaRosError, ValueError):
    """A configuration value or file is invalid; the message names the field and the rule."""


class ObservationError(VlaRosError, ValueError):
    """An observation (image, joint state, instruction) cannot be turned into model input."""


class ChunkError(VlaRosError, ValueError):
    """An action chunk is malformed (shape, names, non-finite values, dt, stamp)."""


class CheckpointError(VlaRosError):
    """A checkpoint or base-weight directory is missing a file or holds the wrong thing."""


class PolicyMismatchError(VlaRosError):
    """The loaded policy expects other joints, cameras, image sizes or action dims than the config."""


class RecordingError(VlaRosError):
    """An episode cannot be started, written or finalised (disk space, state, bad request)."""


class StaleObservationError(ObservationError):
    """A source has no message yet or only an old one: worth waiting for, unlike a malformed one."""
