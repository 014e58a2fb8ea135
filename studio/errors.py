"""Typed errors the UI and the API turn into clear messages (never a stack trace)."""


class StudioError(Exception):
    """Base class: the message is written for the artist and shown as is."""


class InvalidRequest(StudioError, ValueError):
    """A request field is out of range or unreadable; raised once, at the boundary."""


class TooManyJobs(InvalidRequest):
    """A user is over their jobs per minute (an HTTP API answers 429)."""


class ModelLoadError(StudioError):
    """The model source could not be found or loaded."""


class GenerationStopped(StudioError):
    """Raised inside the step callback when the user pressed Stop."""


class BatchSkipped(GenerationStopped):
    """Raised inside the step callback when the caller asked to skip the batch being drawn
    (A1111's Skip): the batches after it still run."""


class QueueFull(StudioError):
    """Too many generations are waiting; try again later (an HTTP API answers 503)."""
