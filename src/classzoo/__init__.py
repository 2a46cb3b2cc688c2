"""classzoo: reproduce model-zoo image classifiers on any PyTorch device."""

from __future__ import annotations

import importlib.util
import sys
from importlib.abc import MetaPathFinder

__version__ = "0.1.0"

from classzoo.engine.host_memory import prefer_huge_pages  # noqa: E402
from classzoo.engine.threads import prefer_passive_wait  # noqa: E402
from classzoo.errors import UserError  # noqa: E402

# libgomp reads its wait policy when torch loads it: spinning threads made a shared 2-core CPU
# 10x slower (engine/threads.py), so this runs before anything of classzoo imports torch;
# PyTorch reads THP_MEM_ALLOC_ENABLE at its first allocation (engine/host_memory.py)
prefer_passive_wait()
prefer_huge_pages()


def create_model(*args, **kwargs):
    """Build a model by name; see :func:`classzoo.models.create_model`."""
    from classzoo.models import create_model as _create_model

    return _create_model(*args, **kwargs)


def _register_with_timm() -> None:
    """Put classzoo's TF-slim models into timm's registry (``slim_resnet_v1_50`` ...)."""
    from classzoo.models import timm_slim  # noqa: F401  (registers on import)


class _AfterTimmImport(MetaPathFinder):
    """Registers the slim models right after ``import timm`` finishes.

    ``import classzoo`` stays cheap (the CLI's ``--version`` does not load torch), yet
    ``import classzoo, timm; timm.create_model("slim_resnet_v1_50")`` works in either order.
    """

    searching = False  # find_spec below asks the finders again, this one included

    def find_spec(self, name, path=None, target=None):
        if name != "timm" or self.searching:
            return None
        self.searching = True
        try:  # the other finders (site-packages, editable); a probe of whether timm is
            spec = importlib.util.find_spec(name)  # installed gets a spec too, not an import
        finally:
            self.searching = False
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            if self in sys.meta_path:  # once timm is imported; its submodules import normally
                sys.meta_path.remove(self)
            _register_with_timm()

        spec.loader.exec_module = exec_then_register  # this spec's own loader instance
        return spec


if "timm" in sys.modules:
    _register_with_timm()
elif not any(isinstance(f, _AfterTimmImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _AfterTimmImport())

__all__ = ["UserError", "create_model", "__version__"]
