"""Mixed recording, in cloudrec's own words: what goes where in the picture, what the output
is, and what is drawn on top.  A dialect validates its request into a :class:`MixSpec`; the
worker composes frames from it and picks up a new one (``version``) without restarting.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from cloudrec.core.rooms import LiveStream
from cloudrec.core.tasks import Media

MAX_SIDE = 1920
MAX_LAYERS = 16


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True)
class MixInput:
    """One user's stream in the picture.  ``crop`` is "fit" (whole picture, black sides) or
    "fill" (cover the box, centred crop); ``source`` cuts a region out of the source first."""

    user_id: str  # empty, with no stream_id: the next stream to join fills this view
    room_id: str
    media: Media = Media.AUDIO_VIDEO
    z: int = 0
    box: Box | None = None  # None: audio only
    crop: str = "fit"
    source: Box | None = None
    alpha: float = 1.0
    stream_id: str | None = None  # ZEGO names views by stream, JoCloud by user
    background_url: str | None = None  # ZEGO BackgroundImage: shown while the stream is away

    @property
    def key(self) -> str:
        if self.stream_id:
            return f"{self.room_id}/s:{self.stream_id}"
        if self.user_id:
            return f"{self.room_id}/{self.user_id}"
        box = self.box or Box(0, 0, 0, 0)
        return f"{self.room_id}/view:{box.x},{box.y},{box.w},{box.h}"


def assign_views(inputs: tuple[MixInput, ...], streams: list[LiveStream]) -> dict[str, LiveStream]:
    """Which live stream each custom view shows: the one it names (by stream id, else by user
    id, in its room); views naming neither take the other streams of their room in the order
    they joined."""
    shown: dict[str, LiveStream] = {}
    taken: set[tuple[str, str]] = set()
    for i in inputs:
        for s in streams:
            named = s.stream_id == i.stream_id if i.stream_id else s.user_id == i.user_id
            if s.room_id == i.room_id and (i.stream_id or i.user_id) and named:
                shown[i.key] = s
                taken.add((s.room_id, s.stream_id))
                break
    for i in inputs:
        if i.stream_id or i.user_id:
            continue
        rest = sorted(
            (
                s
                for s in streams
                if s.room_id == i.room_id and (s.room_id, s.stream_id) not in taken
            ),
            key=lambda s: s.started_at,
        )
        if rest:
            shown[i.key] = rest[0]
            taken.add((rest[0].room_id, rest[0].stream_id))
    return shown


@dataclass(frozen=True)
class TextMark:
    x: int
    y: int
    content: str  # for a timestamp mark: a strftime format
    size: int
    color: str = "FFFFFF"
    background: str | None = "000000"
    alpha: float = 1.0


@dataclass(frozen=True)
class ImageMark:
    x: int
    y: int
    w: int
    h: int
    url: str
    scale: int = 0  # 0 zoom and crop proportionally, 1 stretch
    alpha: float = 1.0


@dataclass(frozen=True)
class MixSpec:
    """The whole mixed picture and sound.  ``template_id`` (templates 1-5) or ``auto_layout``
    ("grid", "horizontal", "vertical", "floating") lays out every stream of the room in the
    order they joined; otherwise ``inputs`` say where each one goes.  Such a layout has a
    region per user, or per stream where ``by_stream`` (a user may publish two streams:
    camera and screen).

    For an ``auto_layout``, ``main_stream_id`` names the stream of the large region (None: the
    first to join; named but not publishing: the background shows there) and ``crop`` says how
    the other regions are filled: "fill" (cover, centred crop) or "fit" (whole picture, black
    sides); the large region is always "fit".  See docs/layouts.md.
    """

    width: int = 640
    height: int = 360
    fps: int = 15
    gop: int = 30
    bitrate_kbps: int = 800
    media: Media = Media.AUDIO_VIDEO
    template_id: int | None = None
    auto_layout: str | None = None
    by_stream: bool = False
    main_stream_id: str | None = None
    # The user of the large region instead (layouts keyed by user): not publishing, the
    # background shows there.
    main_user_id: str | None = None
    crop: str = "fill"
    inputs: tuple[MixInput, ...] = ()
    patch: int = 0  # 0 nothing, 1 black, 2 last frame, 3 the picture at patch_url
    patch_url: str | None = None
    # ZEGO's fill instead of ``patch`` when ``frame_fill`` is set: a stream that left keeps its
    # region (``fill_blank``); a region whose stream is interrupted (or camera off) shows the
    # last frame (1), ``frame_fill_color`` (2) or nothing (3: the view's BackgroundImage, else
    # ``view_background_url`` with fill_blank, else the background).
    fill_blank: bool = False
    frame_fill: int | None = None
    frame_fill_color: str = "000000"
    view_background_url: str | None = None
    always: bool = False  # ZEGO IsAlwaysMix: record from the start, even with no stream
    timestamp: TextMark | None = None
    texts: tuple[TextMark, ...] = ()
    images: tuple[ImageMark, ...] = ()
    background_color: str = "000000"
    background_image: ImageMark | None = None
    sei: bytes | None = None
    hls_segment_s: int = 15
    audio_bitrate_kbps: int = 128
    audio_rate: int = 48000
    audio_channels: int = 2
    # What the mix's files are named after (``<task>_<room>_<output_id>_<track>_<time>``).
    output_id: str = "mix"
    extra: dict[str, Any] = field(default_factory=dict)

    def image_urls(self) -> set[str]:
        """Every picture the mix may draw: background, watermarks, fills."""
        urls = {i.url for i in self.images}
        urls |= {i.background_url for i in self.inputs if i.background_url}
        for url in (self.patch_url, self.view_background_url):
            if url:
                urls.add(url)
        if self.background_image is not None:
            urls.add(self.background_image.url)
        return urls

    def image_kind(self, url: str) -> int:
        """ZEGO's ``image_type`` of a picture of this mix: 1 canvas background, 2 watermark,
        3 default view background, 4 a view's background; 0 for anything else."""
        if self.background_image is not None and url == self.background_image.url:
            return 1
        if any(i.url == url for i in self.images):
            return 2
        if url == self.view_background_url:
            return 3
        if any(i.background_url == url for i in self.inputs):
            return 4
        return 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["media"] = self.media.value
        data["sei"] = self.sei.hex() if self.sei is not None else None
        for i in data["inputs"]:
            i["media"] = i["media"].value if isinstance(i["media"], Media) else i["media"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MixSpec:
        def box(d: dict[str, Any] | None) -> Box | None:
            return None if d is None else Box(**d)

        def mark(d: dict[str, Any] | None) -> TextMark | None:
            return None if d is None else TextMark(**d)

        def image(d: dict[str, Any] | None) -> ImageMark | None:
            return None if d is None else ImageMark(**d)

        return cls(
            **{
                k: v
                for k, v in data.items()
                if k
                not in (
                    "media",
                    "inputs",
                    "timestamp",
                    "texts",
                    "images",
                    "background_image",
                    "sei",
                )
            },
            media=Media(data["media"]),
            inputs=tuple(
                MixInput(
                    **{
                        **i,
                        "media": Media(i["media"]),
                        "box": box(i["box"]),
                        "source": box(i["source"]),
                    }
                )
                for i in data["inputs"]
            ),
            timestamp=mark(data.get("timestamp")),
            texts=tuple(TextMark(**t) for t in data.get("texts", ())),
            images=tuple(ImageMark(**i) for i in data.get("images", ())),
            background_image=image(data.get("background_image")),
            sei=bytes.fromhex(data["sei"]) if data.get("sei") else None,
        )


def round4(value: int) -> int:
    """A side rounded to the nearest multiple of 4 (both dialects round so)."""
    return max(4, (value + 2) // 4 * 4)  # halves round up: 18 -> 20


def round_gop(gop: int, fps: int) -> int:
    """A GOP rounded up to a whole multiple of the frame rate."""
    return max(fps, -(-gop // fps) * fps)
