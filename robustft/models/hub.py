"""The error raised when pretrained weights cannot be downloaded (offline machines), saying what to do."""

from __future__ import annotations


def download_failed(what: str, err: Exception, local_file: str) -> RuntimeError:
    """A RuntimeError for weights ``what`` that failed to download with ``err``; ``local_file`` says which
    file to pass as ``model.checkpoint`` instead."""
    return RuntimeError(
        f"could not download the pretrained weights of {what} ({type(err).__name__}: {err}). If this machine is "
        f"offline, download the weights elsewhere and pass them as a local file: --set model.checkpoint=PATH "
        f"({local_file}); or use the embedded offline backbone: --set model.name=efficientnet_lite0"
    )
