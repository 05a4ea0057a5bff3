"""Every error the runtime raises: an :class:`InputError` (the caller's data) or a :class:`BundleIntegrityError`.

Both are ``ValueError`` subclasses, so code written against ``ValueError`` keeps working; a caller in
the car catches ``InputError`` to drop one bad frame and ``BundleIntegrityError`` to refuse a model.
"""

from __future__ import annotations


class BundleIntegrityError(ValueError):
    """The bundle is incomplete, altered, or not a bundle: refuse to run it."""


class InputError(ValueError):
    """Base class of the errors for input that the predictor refuses (each says what and why)."""


class EmptySceneError(InputError):
    """No agent to predict."""


class TooManyAgentsError(InputError):
    """More agents present at t0 than the bundle's graph accepts."""


class InvalidTracksError(InputError):
    """Tracks the sample builder cannot trust: NaN positions, wrong dtype or shape, unknown agent type."""


class UnitMismatchError(InputError):
    """Time step (or another unit) that does not match the bundle and cannot be converted."""


class MapError(InputError):
    """A map that cannot be drawn (no drawable layers, non-finite coordinates, too large)."""


class PlanError(InputError):
    """A plan of the wrong shape, with non-finite values, or for an agent not in the scene."""


class OptionError(InputError):
    """A predictor option (variant, threads, t0, map id) of the wrong type or out of range."""


class MapWarning(UserWarning):
    """A map geometry was repaired (``shapely.make_valid``) before drawing; the message names it."""
