"""The ZEGO Cloud Recording Actions as OpenAPI operations, after ZEGO's own OpenAPI files
(start-record.yaml, stop-record.yaml, ...): the same field names, types, enums and ranges, the
schema names prefixed with ``Zego`` (``StartRecordRequest`` → ``ZegoStartRecordRequest``).

ZEGO puts every Action on ``POST /`` and tells them apart by the ``Action`` query parameter
(each of its files describes one, with ``Action`` an enum of one value).  One OpenAPI document
cannot hold two operations on one path and method, so cloudrec publishes each Action on its
own path, ``POST /zego/{Action}`` (``/zego/StartRecord``), which the server routes exactly as
``/?Action=StartRecord``.  The ``Action`` query parameter stays as ZEGO's files have it (an
enum of one); a client that sends it must send the path's Action.  ``/`` itself still answers
every Action; it is not listed, as it has no one body schema.

What cloudrec refuses (whiteboards, the VOD vendors 5 and 6) is published as ZEGO has it:
the refusal is an answer in the envelope (300000004 saying so), not a schema error.
"""

from __future__ import annotations

from cloudrec.api.openapi import (
    Schema,
    answers,
    array,
    boolean,
    integer,
    json_body,
    obj,
    operation,
    query,
    ref,
    string,
)
from cloudrec.api.zego.auth import MAX_NONCE_CHARS
from cloudrec.core.rooms import ID_PATTERN

RGB = integer("0xRRGGBB00", fmt="int32")
EDGE = integer(lo=0, hi=1920)
TASK_ID = string("the task's id: 16 characters", pattern="^[A-Za-z0-9_-]{16}$")

_MIX_INPUT = obj(
    "a view of the custom layout (MixMode 1)",
    required=("Top", "Left", "Bottom", "Right", "Layer"),
    StreamId=string("the stream in the view (none: the next to join)"),
    ViewType=integer("1 audio and video, 2 whiteboard", enum=[1, 2], default=1),
    Top=EDGE,
    Left=EDGE,
    Bottom=EDGE,
    Right=EDGE,
    Layer=integer("the larger on top"),
    FillMode=integer("1 crop, 2 scale", enum=[1, 2], default=1),
    BackgroundImage=string("URL of the view's background"),
)

COMPONENTS: dict[str, Schema] = {
    "ZegoMixInputListItem": _MIX_INPUT,
    "ZegoMixConfig": obj(
        "stream mixing (RecordMode 2)",
        required=("MixOutputStreamId",),
        MixMode=integer(
            "1 custom, 2 grid, 3 horizontal, 4 vertical, 5 floating",
            enum=[1, 2, 3, 4, 5],
            default=2,
        ),
        MixInputList=array(ref("ZegoMixInputListItem"), max_items=25),
        FillMode=integer("1 crop, 2 scale (MixMode 2-5)", enum=[1, 2], default=1),
        MixOutputStreamId=string("the mixed stream's id", min_len=1),
        MixOutputVideoConfig=obj(
            "the mixed video",
            required=("Width", "Height", "Fps", "Bitrate"),
            Width=integer(hi=1920),
            Height=integer(hi=1920),
            Fps=integer(lo=5, hi=30, default=15),
            Bitrate=integer("bps"),
        ),
        MixOutputAudioConfig=obj("the mixed audio", Bitrate=integer("bps", default=48000)),
        MixOutputBackgroundColor=RGB,
        MixOutputBackgroundImage=string("URL of the canvas background"),
        MixMaxResolutionStreamId=string(
            "the stream of the large view (MixMode 3-5)", pattern=ID_PATTERN
        ),
        MixOutputWatermarkImage=string("URL of the watermark image"),
        MixOutputWatermarkImageConfig=obj(
            "the watermark's place",
            required=("Left", "Top", "Right", "Bottom"),
            Left=EDGE,
            Top=EDGE,
            Right=EDGE,
            Bottom=EDGE,
        ),
        DefaultMixStreamBackgroundImage=string("URL of a view's default background"),
        IsAlwaysMix=boolean("record before any stream is published", default=False),
        MixOutputWatermarkTimestampConfig=obj(
            "a timestamp in the upper right corner",
            required=("FontSize",),
            FontSize=integer(lo=12, hi=100),
        ),
        RecordSoundWave=boolean(default=False),
        SoundWaveType=integer("0 stream ids, 1 user ids", enum=[0, 1], default=0),
        StreamConfigList=array(
            obj(
                "what to take of a stream",
                StreamId=string("the stream (empty: the default)"),
                StreamType=integer(enum=[0, 1, 2, 3]),
            )
        ),
        ClearInputStreamTimeout=integer("ms"),
    ),
    "ZegoRecordInputParams": obj(
        "what to record",
        required=("RecordMode",),
        RecordMode=integer("1 single streams, 2 mixed", enum=[1, 2]),
        StreamType=integer(
            "1 audio, 2 video, 3 audio and video, 4 separate", enum=[1, 2, 3, 4], default=3
        ),
        ClientTaskId=string("the caller's id: the same within 3 days is the same task"),
        RecordStreamList=array(
            obj("a stream to record", required=("StreamId",), StreamId=string(pattern=ID_PATTERN)),
        ),
        FillBlank=boolean(default=False),
        FillFrame=obj(
            "what fills an interrupted view",
            FrameFillMode=integer(enum=[1, 2, 3], default=1),
            FrameFillColor=RGB,
        ),
        RecordMuteAudio=integer(enum=[1, 2], default=1),
        RecordMuteAudioSplitThreshold=integer(),
        HasWhiteboard=boolean(default=False),
        Whiteboard=array(
            obj(
                "a whiteboard (not in cloudrec: refused)",
                required=("HorizontalRatio", "VerticalRatio"),
                HorizontalRatio=integer(),
                VerticalRatio=integer(),
                Width=integer(default=1280),
                Height=integer(default=720),
                WhiteboardId=string(),
                BackgroundColor=RGB,
                IsPPTAnimation=boolean(default=False),
                PPTAnimationFps=integer(lo=1, hi=30, default=15),
            )
        ),
        MaxIdleTime=integer("seconds", lo=5, hi=86400, default=30),
        MaxRecordTime=integer("seconds", lo=300, hi=86400, default=86400),
        ResumeWithoutInterruption=boolean(default=False),
        MixConfig=ref("ZegoMixConfig"),
    ),
    "ZegoRecordOutputParams": obj(
        "what to write",
        OutputFileFormat=string(
            enum=["mp4", "flv", "hls", "jpg", "aac", "mp3", "ogg"], default="mp4"
        ),
        OutputFolder=string("the folder in the storage"),
        OutputFileRule=integer(enum=[1], default=1),
        SnapshotInterval=integer("seconds (jpg)", lo=5, hi=3600, default=10),
        CallbackUrl=string("http(s) URL for the callbacks"),
        FragmentSeconds=integer(lo=2, hi=60, default=15),
        RealtimeUploadFragment=boolean(),
        ShortFragmentPath=boolean(),
    ),
    "ZegoStorageParams": obj(
        "where the files go",
        required=("Vendor",),
        Vendor=integer(
            "1 AWS S3, 2 Alibaba OSS, 3 Tencent COS, 4 Qiniu, 5/6 VOD (refused), 7 Huawei OBS, "
            "8 Google Cloud Storage, 9 China Mobile EOS, 10 any S3 protocol service",
            enum=list(range(1, 11)),
        ),
        Region=string(),
        Bucket=string(min_len=1),
        AccessKeyId=string(min_len=1),
        AccessKeySecret=string(min_len=1),
        AlibabaCloudVodParams=obj(
            "Vendor 5 (refused)",
            required=("Region", "AccessKeyId", "AccessKeySecret", "Title", "StorageLocation"),
            Region=string(),
            AccessKeyId=string(),
            AccessKeySecret=string(),
            Title=string(),
            StorageLocation=string(),
        ),
        TencentCloudVodParams=obj(
            "Vendor 6 (refused)",
            required=("SecretId", "SecretKey", "Region"),
            SecretId=string(),
            SecretKey=string(),
            Region=string(),
            SubAppId=integer(fmt="int64"),
        ),
        EndPoint=string("the S3 endpoint (Vendor 10)"),
        S3ForcePathStyle=boolean(),
    ),
    "ZegoStartRecordRequest": obj(
        "StartRecord",
        required=("RoomId", "RecordInputParams", "StorageParams"),
        RoomId=string("the room to record", pattern=ID_PATTERN),
        RecordInputParams=ref("ZegoRecordInputParams"),
        RecordOutputParams=ref("ZegoRecordOutputParams"),
        StorageParams=ref("ZegoStorageParams"),
    ),
    "ZegoTaskRequest": obj("names a task", required=("TaskId",), TaskId=TASK_ID),
    "ZegoQueryRecordTaskListRequest": obj(
        "DescribeTasks",
        required=("Status", "StartTime", "EndTime"),
        Status=integer("2 recording, 3 ended", enum=[2, 3]),
        RoomId=string("one room (none: all)"),
        PageOffset=integer(lo=1, hi=1_000_000, default=1),
        PageSize=integer(lo=1, hi=50, default=50),
        StartTime=integer("Unix ms, at most 3 days ago", fmt="int64"),
        EndTime=integer("Unix ms, after StartTime and at most 3 days later", fmt="int64"),
    ),
    "ZegoUpdateLayoutRequest": obj(
        "UpdateLayout",
        required=("TaskId",),
        TaskId=TASK_ID,
        MixMode=integer(enum=[1, 2, 3, 4, 5], default=2),
        MixInputList=array(ref("ZegoMixInputListItem"), max_items=25),
        MixMaxResolutionStreamId=string(pattern=ID_PATTERN),
    ),
    "ZegoUpdateWhiteboardRequest": obj(
        "UpdateWhiteboard (not in cloudrec: refused)",
        required=("TaskId", "WhiteboardId"),
        TaskId=TASK_ID,
        WhiteboardId=string(),
    ),
}

_ENVELOPE = {
    "Code": integer("0 success; otherwise a return code (return-codes.mdx)", fmt="int64"),
    "Message": string('"succeed", or what was wrong'),
    "RequestId": string("the request's id"),
}
_REQUIRED = ("Code", "Message", "RequestId")
_STATUS = integer(
    "1 initialising, 2 recording, 3 ended, 4 ended abnormally, 5 paused", enum=[1, 2, 3, 4, 5]
)
COMPONENTS |= {
    "ZegoAnswer": obj("an answer", required=_REQUIRED, **_ENVELOPE),
    "ZegoStartRecordResponse": obj(
        "StartRecord's answer",
        required=_REQUIRED,
        **_ENVELOPE,
        Data=obj("the task", required=("TaskId",), TaskId=string()),
    ),
    "ZegoRecordFile": obj(
        "a recording file",
        UserId=string(),
        UserName=string(),
        StreamId=string(),
        FileId=string(),
        VideoId=string(),
        FileUrl=string("set once uploaded"),
        OutputFileFormat=string(enum=["mp4", "flv", "hls", "jpg", "aac", "mp3", "ogg"]),
        FileSize=integer("bytes", fmt="int64"),
        Duration=integer("ms"),
        ResolutionWidth=integer(),
        ResolutionHeight=integer(),
        MediaTrackType=integer("1 audio, 2 video, 3 both", enum=[1, 2, 3]),
        BeginTimestamp=integer("Unix ms", fmt="int64"),
        CustomBeginTimestamp=integer("Unix ms", fmt="int64"),
        Status=integer(enum=[1, 2, 3, 4, 5]),
    ),
    "ZegoQueryRecordStatusResponse": obj(
        "DescribeRecordStatus's answer",
        required=_REQUIRED,
        **_ENVELOPE,
        Data=obj(
            "the task",
            RoomId=string(),
            RecordMode=integer(enum=[1, 2]),
            StreamType=integer(enum=[1, 2, 3, 4]),
            RecordBeginTimestamp=integer("Unix ms", fmt="int64"),
            RecordEndTimestamp=integer("Unix ms (0: not ended)", fmt="int64"),
            Status=_STATUS,
            RecordFiles=array(ref("ZegoRecordFile")),
        ),
    ),
    "ZegoQueryRecordTaskListResponse": obj(
        "DescribeTasks's answer",
        required=_REQUIRED,
        **_ENVELOPE,
        Data=obj(
            "a page of tasks",
            PageOffset=integer(),
            PageSize=integer(),
            TotalCount=integer(),
            TaskidList=array(
                obj(
                    "a task",
                    RecordBeginTimestamp=integer("Unix ms", fmt="int64"),
                    TaskId=string(),
                    RoomId=string(),
                    Status=_STATUS,
                )
            ),
        ),
    ),
}

# Action → (summary, request schema, answer schema); the order of ZEGO's documentation.
ACTIONS: dict[str, tuple[str, str, str]] = {
    "StartRecord": ("Start a recording", "ZegoStartRecordRequest", "ZegoStartRecordResponse"),
    "StopRecord": ("Stop a recording", "ZegoTaskRequest", "ZegoAnswer"),
    "DescribeRecordStatus": (
        "A task's status and files",
        "ZegoTaskRequest",
        "ZegoQueryRecordStatusResponse",
    ),
    "DescribeTasks": (
        "The tasks recording or ended",
        "ZegoQueryRecordTaskListRequest",
        "ZegoQueryRecordTaskListResponse",
    ),
    "UpdateLayout": ("Change a mix's layout", "ZegoUpdateLayoutRequest", "ZegoAnswer"),
    "PauseRecord": ("Pause a recording", "ZegoTaskRequest", "ZegoAnswer"),
    "ResumeRecord": ("Resume a paused recording", "ZegoTaskRequest", "ZegoAnswer"),
    "TakeSnapshot": ("A picture of a mix now", "ZegoTaskRequest", "ZegoAnswer"),
    "UpdateWhiteboard": ("Change the whiteboard", "ZegoUpdateWhiteboardRequest", "ZegoAnswer"),
}

_COMMON = [
    query("AppId", integer("the app id", fmt="uint32"), required=True),
    query(
        "SignatureNonce",
        string("16 hex characters, new for every request", max_len=MAX_NONCE_CHARS),
        required=True,
    ),
    query("Timestamp", integer("Unix seconds, at most 10 minutes off", fmt="int64"), required=True),
    query("SignatureVersion", string(enum=["2.0"], default="2.0"), required=True),
    query(
        "Signature",
        string("md5 hex of AppId + SignatureNonce + ServerSecret + Timestamp"),
        required=True,
    ),
]
TOO_LARGE = {
    "413": {
        "description": "the body is larger than max_body_bytes",
        "content": {"application/json": {"schema": ref("ZegoAnswer")}},
    }
}


def openapi_extra(action: str) -> Schema:
    """The operation of ``POST /zego/{action}``, for ``openapi_extra``."""
    _, request, answer = ACTIONS[action]
    action_param = query("Action", string(enum=[action]), "the path's Action (may be left out)")
    return operation(
        {"parameters": [action_param, *_COMMON]},
        json_body(request),
        answers(answer, "every answer, success or refusal (Code)", **TOO_LARGE),
    )
