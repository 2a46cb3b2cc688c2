"""classzoo: reproduce model-zoo image classifiers on any PyTorch device."""

__version__ = "0.1.0"

from classzoo.errors import UserError  # noqa: E402


def create_model(*args, **kwargs):
    """Build a model by name; see :func:`classzoo.models.create_model`."""
    from classzoo.models import create_model as _create_model

    return _create_model(*args, **kwargs)


__all__ = ["UserError", "create_model", "__version__"]
