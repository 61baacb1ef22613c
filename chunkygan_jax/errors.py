"""Exception types raised by the library.

Every error a user can cause (bad files, impossible options, wrong shapes) is a subclass of
`ChunkyGANError`, so callers and the command-line tools can catch one type and show its message.
"""


class ChunkyGANError(Exception):
    """Base class of all errors the library raises on bad input."""


class CheckpointError(ChunkyGANError):
    """A checkpoint or state dict is missing, corrupt, unsafe or does not fit the architecture."""


class ImageError(ChunkyGANError):
    """An image or mask file cannot be read or has an unusable shape."""


class ConfigError(ChunkyGANError):
    """Options that cannot work together, or values out of range."""


class ResourceError(ChunkyGANError):
    """A request that cannot fit the memory (or other resources) this machine has."""
