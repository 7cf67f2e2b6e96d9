"""The room directory over HTTP: ``GET /v1/apps/{appid}/rooms[/{roomid}/streams]``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request

from cloudrec.api.auth import authenticate_basic
from cloudrec.bootstrap import Container
from cloudrec.core.rooms import LiveStream, check_id

router = APIRouter(prefix="/v1/apps/{appid}", tags=["rooms"])


def stream_view(s: LiveStream) -> dict[str, Any]:
    m = s.meta
    return {
        "room_id": s.room_id,
        "stream_id": s.stream_id,
        "user_id": s.user_id,
        "video_codec": m.video_codec,
        "audio_codec": m.audio_codec,
        "width": m.width,
        "height": m.height,
        "fps": m.fps,
        "audio_rate": m.audio_rate,
        "audio_channels": m.audio_channels,
        "started_at": s.started_at.isoformat(),
        "pull_url": s.pull_url,
        "source": s.source,
        "node": s.node or None,  # the ingest node holding the publisher (docs/cluster.md)
    }


def _container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


@router.get("/rooms", summary="Rooms of the app that have at least one live stream")
def list_rooms(
    appid: int, request: Request, authorization: Annotated[str | None, Header()] = None
) -> dict[str, Any]:
    c = _container(request)
    authenticate_basic(c.apps, authorization, appid)
    rooms: dict[str, list[LiveStream]] = {}
    for s in c.rooms.live(appid):
        rooms.setdefault(s.room_id, []).append(s)
    return {
        "app_id": appid,
        "rooms": [
            {
                "room_id": room_id,
                "stream_count": len(streams),
                "since": min(s.started_at for s in streams).isoformat(),
            }
            for room_id, streams in sorted(rooms.items())
        ],
    }


@router.get("/rooms/{roomid}/streams", summary="Live streams of one room")
def list_streams(
    appid: int,
    roomid: str,
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    c = _container(request)
    authenticate_basic(c.apps, authorization, appid)
    check_id("room id", roomid)
    return {
        "app_id": appid,
        "room_id": roomid,
        "streams": [stream_view(s) for s in c.rooms.live(appid, roomid)],
    }
