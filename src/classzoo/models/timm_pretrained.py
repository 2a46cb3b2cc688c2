"""``model.pretrained: true``: timm's own pretrained weights, through timm's own caches.

timm fetches weights from the Hugging Face Hub (``hf_hub_id``) or a URL into the torch hub
cache (timm/models/_builder.py ``_resolve_pretrained_source``, _hub.py). Offline, its download
retries for about a minute before failing with a long traceback; here the cache is looked up
first (huggingface_hub ``try_to_load_from_cache``), a cached file is loaded without touching the
network, and a missing one with no reachable host is one line within seconds.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import timm
from torch import nn

from classzoo.errors import UserError

# timm/models/_hub.py: HF_SAFE_WEIGHTS_NAME is tried before HF_WEIGHTS_NAME
HUB_FILES = ("model.safetensors", "pytorch_model.bin")
PROBE_TIMEOUT_S = 3.0  # the whole offline answer stays well under 5 s


@dataclass(frozen=True)
class WeightsLocation:
    """Where timm would get a model's weights, and the cached file if it is already there."""

    kind: str  # "hf-hub" | "url" | "file"
    where: str  # repo id, URL or path
    cache_dir: Path
    cached: Path | None


def locate(name: str, overlay: dict[str, Any] | None = None) -> WeightsLocation:
    """timm's weight source for ``name`` (``arch`` or ``arch.tag``), with the caller's
    ``pretrained_cfg_overlay`` on it as timm applies it (its ``file``, ``url`` or
    ``hf_hub_id``), and its cached file."""
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is not None and overlay:
        cfg = dataclasses.replace(cfg, **overlay)
    if cfg is None or not cfg.has_weights:
        raise UserError(f"model.pretrained: timm has no pretrained weights for '{name}'")
    if cfg.file:
        path = Path(cfg.file)
        return WeightsLocation("file", cfg.file, path.parent, path if path.is_file() else None)
    if cfg.hf_hub_id:
        return _locate_hub(cfg.hf_hub_id, cfg.hf_hub_filename)
    import torch.hub

    cache = Path(torch.hub.get_dir()) / "checkpoints"  # timm _hub.get_cache_dir()
    url = cfg.url[0] if isinstance(cfg.url, (list, tuple)) else cfg.url
    path = cache / os.path.basename(urlparse(url).path)
    return WeightsLocation("url", url, cache, path if path.is_file() else None)


def _locate_hub(hub_id: str, filename: str | None) -> WeightsLocation:
    from huggingface_hub import constants, try_to_load_from_cache

    repo, _, revision = hub_id.partition("@")  # timm _hub.hf_split
    for name in (filename,) if filename else HUB_FILES:
        hit = try_to_load_from_cache(repo, name, revision=revision or None)
        if isinstance(hit, str):
            return WeightsLocation("hf-hub", hub_id, Path(constants.HF_HUB_CACHE), Path(hit))
    return WeightsLocation("hf-hub", hub_id, Path(constants.HF_HUB_CACHE), None)


def create_pretrained(name: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, pretrained=True)``, never stuck offline."""
    asked = kwargs.pop("pretrained_cfg_overlay", None) or {}
    loc = locate(name, asked)
    if loc.cached is not None:  # load the cached file itself: no request to the hub
        overlay = {**asked, "file": str(loc.cached)}
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    host = _host(loc)
    why = _offline_reason(host)
    if why is not None:
        raise UserError(
            f"model.pretrained: timm's weights for {name} ({loc.kind} {loc.where}) are not in "
            f"the cache {loc.cache_dir} and {why}; fetch them where there is network (same "
            f"cache) or set model.checkpoint=FILE (.pt, .safetensors or a TF checkpoint)"
        )
    overlay = {"pretrained_cfg_overlay": asked} if asked else {}
    return timm.create_model(name, pretrained=True, **overlay, **kwargs)  # into that cache


def _host(loc: WeightsLocation) -> str:
    if loc.kind == "hf-hub":
        from huggingface_hub import constants

        return urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    return urlparse(loc.where).hostname or ""


def _offline_reason(host: str) -> str | None:
    """None when ``host`` answers on port 443 within PROBE_TIMEOUT_S, else why not."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    result: list[str | None] = []

    def probe() -> None:  # a thread: name resolution itself has no timeout
        try:
            socket.create_connection((host, 443), timeout=PROBE_TIMEOUT_S).close()
            result.append(None)
        except OSError as exc:
            result.append(f"{host} cannot be reached ({exc.strerror or exc})")

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(PROBE_TIMEOUT_S + 0.5)
    return result[0] if result else f"{host} did not answer within {PROBE_TIMEOUT_S:.0f} s"
