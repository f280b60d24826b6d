"""Pretrained weights from the Hugging Face hub: fail fast, with what to do, when they cannot be fetched.

Offline and without a cached copy, ``huggingface_hub`` retries each file five times with back-off (about
25 s) and timm then tries a second file name, so a plain ``timm.create_model(..., pretrained=True)`` fails
after about a minute with two tracebacks. :func:`check_hub` asks the cache first and the hub once.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import huggingface_hub
from huggingface_hub import constants

from robustft.errors import WeightsDownloadError

T = TypeVar("T")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors",
                "open_clip_pytorch_model.bin")
"""The names timm and OpenCLIP give their weights on the hub; one of them in the cache is enough."""
PROBE_TIMEOUT_S = 10.0
"""How long the single request to the hub may take before the machine counts as offline, seconds."""


def download_failed(what: str, reason: str, local_file: str) -> WeightsDownloadError:
    """The error for weights ``what`` that could not be fetched because of ``reason``; ``local_file`` says
    which file to pass as ``model.checkpoint`` instead."""
    return WeightsDownloadError(
        f"could not download the pretrained weights of {what} ({reason}). If this machine is offline, download "
        f"the weights elsewhere and pass them as a local file: --set model.checkpoint=PATH ({local_file}); or use "
        "the embedded offline backbone: --set model.name=efficientnet_lite0"
    )


def cached(repo_id: str) -> bool:
    """Whether the local hub cache holds weights of ``repo_id`` (``owner/name``, optionally ``@revision``)."""
    repo, _, revision = repo_id.partition("@")
    return any(isinstance(huggingface_hub.try_to_load_from_cache(repo, f, revision=revision or None), str)
               for f in WEIGHT_FILES)


def check_hub(repo_id: str | None, what: str, local_file: str) -> None:
    """Raise :class:`WeightsDownloadError` at once when the weights of hub repository ``repo_id`` are neither
    cached nor downloadable: ``HF_HUB_OFFLINE`` is set, or one request to the hub fails within
    :data:`PROBE_TIMEOUT_S`. Nothing to check for weights that are not on the hub (``repo_id`` None)."""
    if repo_id is None or cached(repo_id):
        return
    if huggingface_hub.is_offline_mode():
        raise download_failed(what, "HF_HUB_OFFLINE is set and they are not in the local cache", local_file)
    try:
        huggingface_hub.get_session().head(constants.ENDPOINT, timeout=PROBE_TIMEOUT_S)
    except Exception as err:  # any transport error: DNS, refused, timeout, proxy
        raise download_failed(what, f"{constants.ENDPOINT} cannot be reached: {type(err).__name__}: {err}",
                              local_file) from None


def fetch(create: Callable[[], T], repo_id: str | None, what: str, local_file: str) -> T:
    """``create()``, which downloads the pretrained weights of ``what`` (hub repository ``repo_id``) unless
    they are cached, after :func:`check_hub`; a download that fails anyway is a :class:`WeightsDownloadError`."""
    check_hub(repo_id, what, local_file)
    try:
        return create()
    except Exception as err:  # hub errors come in many types (HTTP, OS, HF offline mode)
        raise download_failed(what, f"{type(err).__name__}: {err}", local_file) from err
