"""The JoCloud ``recordoss`` endpoints as OpenAPI operations: the request bodies and answers of
the "Cloud Recording RESTful API" document, parameter names verbatim (``routes.py`` parses
them; these schemas only publish them, see ``api/openapi.py``).

Ranges are the document's; the field a mode requires (``mixconfig`` for ``streamtype`` 1,
``uid`` for 2) is optional in the schema and named in its description, as the document's
table does.  ``fileformat`` and ``hlssegment`` are cloudrec's extensions (docs/jocloud.md).
"""

from __future__ import annotations

from cloudrec.api.jocloud.mixconfig import FONTS, TIMESTAMP_FORMATS
from cloudrec.api.jocloud.schemas import JOCLOUD_FORMATS, MAX_PREFIX_CHARS, MAX_URL_CHARS
from cloudrec.api.openapi import (
    Schema,
    answers,
    array,
    header,
    integer,
    json_body,
    number,
    obj,
    operation,
    path,
    query,
    ref,
    string,
)
from cloudrec.core.rooms import ID_PATTERN

SIDE = 1920
COLOR = string("RGB hex, all upper or all lower case", pattern="^([0-9A-F]{6}|[0-9a-f]{6})$")
ALPHA = number("transparency: 0.0 transparent, 1.0 opaque", lo=0.0, hi=1.0)


def _corner(what: str) -> dict[str, Schema]:
    return {
        "x": integer(f"{what}: left, [0, 1920) and inside the output", lo=0, hi=SIDE, hi_open=True),
        "y": integer(f"{what}: top, [0, 1920) and inside the output", lo=0, hi=SIDE, hi_open=True),
    }


def _text_style() -> dict[str, Schema]:
    return {
        "font": string("font", enum=list(FONTS)),
        "size": integer("font size", lo=0, hi=100, lo_open=True),
        "color": COLOR,
        "backgroundColor": COLOR,
        "alpha": ALPHA,
    }


IMAGE_URL = string("image URL, at most 256 bytes", min_len=1, max_len=256)
SCALE = integer("0: zoom and crop in proportion, 1: stretch", enum=[0, 1])

COMPONENTS: dict[str, Schema] = {
    "JoCloudMixInput": obj(
        "an input stream of a custom layout",
        required=("uid",),
        uid=string("the source stream's user id", pattern=ID_PATTERN),
        roomid=string("the source stream's room (default: the recorded room)", pattern=ID_PATTERN),
        streamtype=integer("0 video and audio, 1 video, 2 audio", enum=[0, 1, 2]),
        zOrder=integer("layer, 0 the bottom", lo=0, hi=16),
        layoutX=integer("left in the canvas", lo=0, hi=SIDE),
        layoutY=integer("top in the canvas", lo=0, hi=SIDE),
        layoutW=integer("width in the canvas", lo=0, hi=SIDE, lo_open=True),
        layoutH=integer("height in the canvas", lo=0, hi=SIDE, lo_open=True),
        crop=integer("0 fit with black sides, 1 fill and crop", enum=[0, 1]),
        cropX=integer("cut-out left in the source", lo=0, hi=SIDE),
        cropY=integer("cut-out top in the source", lo=0, hi=SIDE),
        cropW=integer("cut-out width", lo=0, hi=SIDE, lo_open=True),
        cropH=integer("cut-out height", lo=0, hi=SIDE, lo_open=True),
        alpha=ALPHA,
    ),
    "JoCloudWatermark": obj(
        "watermarks",
        timestamp=obj(
            "timestamp watermark",
            required=("x", "y", "format", "size"),
            **_corner("timestamp"),
            format=string("strftime format", enum=list(TIMESTAMP_FORMATS)),
            **_text_style(),
        ),
        textList=array(
            obj(
                "text watermark",
                required=("x", "y", "content", "size"),
                **_corner("text"),
                content=string("the text", min_len=1, max_len=512),
                **_text_style(),
            )
        ),
        imageList=array(
            obj(
                "image watermark",
                required=("x", "y", "width", "height", "url", "scale"),
                **_corner("image"),
                width=integer("width", lo=0, hi=SIDE, lo_open=True, hi_open=True),
                height=integer("height", lo=0, hi=SIDE, lo_open=True, hi_open=True),
                url=IMAGE_URL,
                scale=SCALE,
                alpha=ALPHA,
            )
        ),
    ),
    "JoCloudMixOutput": obj(
        "the mixed stream",
        required=("streamtype",),
        streamtype=integer("0 video and audio, 1 video, 2 audio", enum=[0, 1, 2]),
        videowidth=integer("rounded to a multiple of 4", lo=16, hi=SIDE),
        videoheight=integer("rounded to a multiple of 4", lo=16, hi=SIDE),
        videobitrate=integer("kbps", lo=0, hi=10000, lo_open=True),
        videofps=integer("frames per second (above 60: 60)", lo=0, lo_open=True, default=15),
        videogop=integer("frames", lo=0, hi=1000, lo_open=True, hi_open=True, default=30),
        videoencode=integer("100: H.264 (others: code 4004)", default=100),
        audiobitrate=integer("kbps", enum=[128]),
        audiochannel=integer("2: stereo", enum=[2]),
        audiosample=integer("Hz", enum=[48000]),
        audioformat=integer("2: AAC", enum=[2]),
        patch=integer("0 none, 1 black, 2 last frame, 3 picture", enum=[0, 1, 2, 3]),
        patchUrl=IMAGE_URL,
        watermark=ref("JoCloudWatermark"),
        background=obj(
            "background",
            color=COLOR,
            image=obj("background image", required=("url", "scale"), url=IMAGE_URL, scale=SCALE),
        ),
        base64seidata=string("SEI in every video frame, base64 of at most 2048 bytes"),
    ),
    "JoCloudMixConfig": obj(
        "mixed stream configuration: templateid (one room) or input (custom layout)",
        required=("output",),
        input=array(ref("JoCloudMixInput"), "custom layout inputs (the document's 'intput')"),
        templateid=integer(
            "1 horizontal, 2 vertical, 3 tiled, 4 corner, 5 five users", enum=[1, 2, 3, 4, 5]
        ),
        output=ref("JoCloudMixOutput"),
    ),
    "JoCloudStorageCfg": obj(
        "the app's object storage",
        required=("vender", "endpoint", "bucket", "accesskey", "secretkey"),
        vender=integer("0 Alibaba Cloud OSS, 1 Tencent Cloud COS, 2 Qiniu Kodo", enum=[0, 1, 2]),
        endpoint=string("the storage endpoint", min_len=1, max_len=256),
        bucket=string("bucket", min_len=1, max_len=256),
        accesskey=string("access key", min_len=1, max_len=256),
        secretkey=string("secret key", min_len=1, max_len=256),
        fileprefix=array(
            string("a folder name", pattern="^[A-Za-z0-9]+$"),
            f"folders before the file name, at most {MAX_PREFIX_CHARS} characters joined",
        ),
    ),
    "JoCloudStartRecord": obj(
        "startrecord",
        required=("resid", "appid", "roomid", "recordtype", "streamtype", "storagecfg"),
        resid=string("resid from applyrecord", min_len=1, max_len=256),
        appid=integer("the app id (the URL's)"),
        roomid=string("the room to record", pattern=ID_PATTERN),
        recordtype=integer("0 audio and video, 1 video, 2 audio", enum=[0, 1, 2]),
        streamtype=integer("1 mixed stream, 2 source stream", enum=[1, 2]),
        mixconfig=ref("JoCloudMixConfig"),
        uid=string("the user to record (required with streamtype 2)", pattern=ID_PATTERN),
        storagecfg=ref("JoCloudStorageCfg"),
        callbackurl=string("http(s) URL for the callbacks", max_len=MAX_URL_CHARS),
        fileformat={
            "description": "cloudrec extension: the file formats (default mp4)",
            "oneOf": [
                string(enum=list(JOCLOUD_FORMATS)),
                array(string(enum=list(JOCLOUD_FORMATS))),
            ],
        },
        hlssegment=integer("cloudrec extension: HLS segment seconds", lo=1, hi=60, default=15),
    ),
    "JoCloudStopRecord": obj(
        "stoprecord",
        required=("appid", "resid", "roomid", "recordid"),
        appid=integer("the app id (the URL's)"),
        resid=string("resid the recording was started with", min_len=1, max_len=256),
        roomid=string("the recorded room", pattern=ID_PATTERN),
        recordid=string("recordid from startrecord", min_len=1, max_len=128),
    ),
    "JoCloudUpdateMixRecord": obj(
        "updatemixrecord",
        required=("appid", "resid", "roomid", "recordid", "mixconfig"),
        appid=integer("the app id (the URL's)"),
        resid=string("resid the recording was started with", min_len=1, max_len=256),
        roomid=string("the recorded room", pattern=ID_PATTERN),
        recordid=string("recordid from startrecord", min_len=1, max_len=128),
        mixconfig=ref("JoCloudMixConfig"),
    ),
}

_ENVELOPE = {
    "code": integer("0 success; otherwise the document's response code"),
    "message": string('"success", or what was wrong'),
    "traceId": string("the request's traceId"),
}
_REQUIRED = ("code", "message", "traceId")
COMPONENTS |= {
    "JoCloudAnswer": obj("an answer", required=_REQUIRED, **_ENVELOPE),
    "JoCloudApplyAnswer": obj(
        "applyrecord's answer", required=_REQUIRED, **_ENVELOPE, resid=string("valid 5 minutes")
    ),
    "JoCloudRecordAnswer": obj(
        "the answer naming a recording", required=_REQUIRED, **_ENVELOPE, recordid=string()
    ),
    "JoCloudQueryAnswer": obj(
        "queryrecord's answer",
        required=_REQUIRED,
        **_ENVELOPE,
        recordid=string(),
        data=obj(
            "the recording",
            required=("recordid", "appid", "roomid", "status", "createtime", "starttime"),
            recordid=string(),
            appid=integer(),
            roomid=string(),
            status=integer("0 initialising, 1 recording", enum=[0, 1]),
            createtime=integer("Unix ms", fmt="int64"),
            starttime=integer("Unix ms (0: not yet)", fmt="int64"),
        ),
    ),
}

PARAMETERS = operation(
    {
        "parameters": [
            path("appid", integer("the app id")),
            query("traceId", string(), "echoed in the answer's traceId"),
            header("AppID", string(), "the app id again", required=True),
            header("Token", string(), "Basic base64(appid:server secret)", required=True),
        ]
    }
)
NOT_FOUND = {
    "404": {"description": "an unknown endpoint, a wrong method or a body not application/json"}
}
TOO_LARGE = {
    "413": {
        "description": "the body is larger than max_body_bytes",
        "content": {"application/json": {"schema": ref("JoCloudAnswer")}},
    }
}

# endpoint → (path after recordoss/, summary, request schema or None, answer schema)
ENDPOINTS: dict[str, tuple[str, str, str | None, str]] = {
    "applyrecord": ("applyrecord", "Get a resid", None, "JoCloudApplyAnswer"),
    "startrecord": (
        "startrecord",
        "Start a recording",
        "JoCloudStartRecord",
        "JoCloudRecordAnswer",
    ),
    "stoprecord": (
        "stoprecord",
        "Stop a recording",
        "JoCloudStopRecord",
        "JoCloudRecordAnswer",
    ),
    "updatemixrecord": (
        "updatemixrecord",
        "Change a mixed recording's layout",
        "JoCloudUpdateMixRecord",
        "JoCloudRecordAnswer",
    ),
    "queryrecord": (
        "queryrecord/{roomid}/{recordid}",
        "Is a recording running",
        None,
        "JoCloudQueryAnswer",
    ),
}


def openapi_extra(endpoint: str) -> Schema:
    """The operation's parameters, body and answers, for ``openapi_extra``."""
    _, _, request, answer = ENDPOINTS[endpoint]
    parts = [
        PARAMETERS,
        answers(answer, "every answer, success or refusal (code)", **NOT_FOUND, **TOO_LARGE),
    ]
    if request is not None:
        parts.append(json_body(request))
    if endpoint == "queryrecord":
        parts.append(
            {
                "parameters": [
                    path("roomid", string(pattern=ID_PATTERN)),
                    path("recordid", string(min_len=1, max_len=128)),
                ]
            }
        )
    return operation(*parts)
