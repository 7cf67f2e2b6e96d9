"""Each dialect's callback format, by the dialect name a task carries (no I/O library imported:
a worker or a cluster actor builds it at start)."""

from __future__ import annotations

from cloudrec.api.agora.callbacks import AgoraCallbacks
from cloudrec.api.jocloud.callbacks import JoCloudCallbacks
from cloudrec.api.zego.callbacks import ZegoCallbacks
from cloudrec.core.callbacks import Callbacks


def callback_formats() -> Callbacks:
    """cloudrec's own tasks speak JoCloud's (the native API's callbacks until it has its own)."""
    jocloud = JoCloudCallbacks()
    return Callbacks(
        {
            "jocloud": jocloud,
            "cloudrec": jocloud,
            "zego": ZegoCallbacks(),
            "agora": AgoraCallbacks(),
        }
    )
