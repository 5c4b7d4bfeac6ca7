"""Typed errors raised at partopt's public boundary.

Every error a user can cause by bad input derives from :class:`PartoptError`; the CLI turns
one into a single line on stderr and exit code 2. An *infeasible* instance is not an error:
it is a :class:`~partopt.solvers.Solution` with ``status="infeasible"`` and a reason.
"""


class PartoptError(Exception):
    """Base class of every input error partopt raises on purpose."""


class UnknownModelError(PartoptError):
    """A model name that is neither in the zoo nor a ``file.py:factory`` spec."""


class ModelLoadError(PartoptError):
    """A user model file/factory that cannot be loaded or does not return an nn.Module."""


class UnsupportedOpError(PartoptError):
    """An operation in the traced model that partopt cannot plan or execute."""


class UnknownPresetError(PartoptError):
    """A cluster name that is neither a preset nor an existing file."""


class ClusterError(PartoptError):
    """A malformed or invalid cluster description (file or arguments)."""


class UnknownMethodError(PartoptError):
    """A method name that partopt does not implement."""


class NotApplicableError(PartoptError):
    """A method that does not apply to this model (NPTP on a 1x1 input, DPFP without spatial
    layers, DN2PCIoT on a graph that is not a chain); the message says why. ``best`` skips
    such a method and nothing else."""


class PlanError(PartoptError):
    """A plan that is malformed or inconsistent with its model and cluster."""


class InputShapeError(PartoptError):
    """An input shape that is malformed or does not fit the model."""


class SolverError(PartoptError):
    """A solver back-end that is unknown, unavailable, or misused."""


class RunError(PartoptError):
    """A distributed run that failed: a rank died, hung past the timeout, or could not start."""


class ConfigError(PartoptError):
    """A malformed or invalid sweep file (``partopt bench``) or results file (``partopt report``)."""
