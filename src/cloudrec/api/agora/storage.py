"""``storageConfig`` → a :class:`StorageTarget` and the file name prefix.

The vendors and their ``region`` numbers are region-vendor.mdx's tables, verbatim; a region's
name becomes the vendor's own region id by lower-casing it and writing ``-`` for ``_``
(``CN_Hangzhou`` → ``cn-hangzhou``, ``US_EAST_1`` → ``us-east-1``).  Agora gives no endpoint
for a vendor's bucket: it is the vendor's public one for that region.  Refused, with the reason:
Microsoft Azure (5: not the S3 protocol cloudrec speaks), Baidu (8: not built), ``stsToken``
(temporary credentials are not built) and ``extensionParams.sse``/``tag`` (not built: a file
would be stored unencrypted or untagged while the request asked otherwise).
"""

from __future__ import annotations

import re
from typing import Any

from cloudrec.api.agora.fields import bad, number, obj, strings, text
from cloudrec.core.tasks import StorageTarget

_AWS = [
    "US_EAST_1",
    "US_EAST_2",
    "US_WEST_1",
    "US_WEST_2",
    "EU_WEST_1",
    "EU_WEST_2",
    "EU_WEST_3",
    "EU_CENTRAL_1",
    "AP_SOUTHEAST_1",
    "AP_SOUTHEAST_2",
    "AP_NORTHEAST_1",
    "AP_NORTHEAST_2",
    "SA_EAST_1",
    "CA_CENTRAL_1",
    "AP_SOUTH_1",
    "CN_NORTH_1",
    "CN_NORTHWEST_1",
]
_ALIBABA = [
    "CN_Hangzhou",
    "CN_Shanghai",
    "CN_Qingdao",
    "CN_Beijing",
    "CN_Zhangjiakou",
    "CN_Huhehaote",
    "CN_Shenzhen",
    "CN_Hongkong",
    "US_West_1",
    "US_East_1",
    "AP_Southeast_1",
    "AP_Southeast_2",
    "AP_Southeast_3",
    "AP_Southeast_5",
    "AP_Northeast_1",
    "AP_South_1",
    "EU_Central_1",
    "EU_West_1",
    "EU_East_1",
    "AP_Southeast_6",
    "CN_Heyuan",
    "CN_Guangzhou",
    "CN_Chengdu",
    "CN_Nanjing",
    "CN_Fuzhou",
    "CN_Wulanchabu",
    "CN_Northeast_2",
    "CN_Southeast_7",
]
_TENCENT = [
    "AP_Beijing_1",
    "AP_Beijing",
    "AP_Shanghai",
    "AP_Guangzhou",
    "AP_Chengdu",
    "AP_Chongqing",
    "AP_Shenzhen_FSI",
    "AP_Shanghai_FSI",
    "AP_Beijing_FSI",
    "AP_Hongkong",
    "AP_Singapore",
    "AP_Mumbai",
    "AP_Seoul",
    "AP_Bangkok",
    "AP_Tokyo",
    "NA_Siliconvalley",
    "NA_Ashburn",
    "NA_Toronto",
    "EU_Frankfurt",
    "EU_Moscow",
]
_HUAWEI = [
    "CN_North_1",
    "CN_North_4",
    "CN_East_2",
    "CN_East_3",
    "CN_South_1",
    "CN_Southwest_2",
    "AP_Southeast_1",
    "AP_Southeast_2",
    "AP_Southeast_3",
    "AF_South_1",
    "SA_Argentina_1",
    "SA_Peru_1",
    "NA_Mexico_1",
    "SA_Brazil_1",
    "LA_South_2",
    "SA_Chile_1",
]

# vendor → (cloudrec's vendor name, region number → region name)
REGIONS: dict[int, tuple[str, dict[int, str]]] = {
    1: (
        "aws-s3",
        {
            **dict(enumerate(_AWS)),
            18: "AF_SOUTH_1",
            19: "AP_EAST_1",
            20: "AP_NORTHEAST_3",
            21: "EU_NORTH_1",
            22: "ME_SOUTH_1",
            24: "AP_SOUTHEAST_3",
            25: "EU_SOUTH_1",
        },
    ),
    2: ("aliyun-oss", dict(enumerate(_ALIBABA))),
    3: ("tencent-cos", dict(enumerate(_TENCENT))),
    6: ("gcs", {0: ""}),
    7: ("huawei-obs", dict(enumerate(_HUAWEI))),
    11: ("s3", {0: ""}),
}
REFUSED_VENDORS = {
    5: "Microsoft Azure (vendor 5) is not an S3-protocol store; cloudrec uploads over S3 only",
    8: "Baidu IntelligentCloud (vendor 8) is not built in cloudrec yet",
}
_PREFIX_PART = re.compile(r"^[A-Za-z0-9]+$")
MAX_PREFIX_CHARS = 128
WHERE = "clientRequest.storageConfig."


def region_id(name: str) -> str:
    """A region name of region-vendor.mdx as the vendor writes it: ``CN_Hangzhou`` →
    ``cn-hangzhou``."""
    return name.lower().replace("_", "-")


def _endpoint(vendor: str, region: str, extension: dict[str, Any]) -> str:
    if vendor == "aliyun-oss":
        return f"oss-{region}.aliyuncs.com"
    if vendor == "tencent-cos":
        return f"cos.{region}.myqcloud.com"
    if vendor == "s3":
        return str(text(extension, "endpoint", WHERE + "extensionParams.", max_len=256))
    return ""  # aws-s3, huawei-obs, gcs: the resolver builds the region's endpoint


def parse_prefix(raw: dict[str, Any]) -> tuple[str, ...]:
    prefix = strings(raw, "fileNamePrefix", WHERE, max_items=64) or []
    for part in prefix:
        if not _PREFIX_PART.match(part):
            raise bad(
                f"{WHERE}fileNamePrefix part {part!r} may hold only a-z, A-Z and 0-9 (no slashes)"
            )
    joined = "/".join(prefix) + ("/" if prefix else "")
    if len(joined) > MAX_PREFIX_CHARS:
        raise bad(
            f"{WHERE}fileNamePrefix makes a prefix of {len(joined)} characters; "
            f"at most {MAX_PREFIX_CHARS} are allowed"
        )
    return tuple(prefix)


def parse_storage(client: dict[str, Any]) -> tuple[StorageTarget, tuple[str, ...]]:
    """``clientRequest.storageConfig`` → (target, prefix parts)."""
    raw = obj(client, "storageConfig", "clientRequest.", required=True)
    vendor_no = number(raw, "vendor", WHERE)
    if vendor_no in REFUSED_VENDORS:
        raise bad(f"{WHERE}vendor: {REFUSED_VENDORS[vendor_no]}")
    if vendor_no not in REGIONS:
        raise bad(f"{WHERE}vendor must be one of 1, 2, 3, 5, 6, 7, 8, 11, not {vendor_no}")
    vendor, regions = REGIONS[vendor_no]
    region_no = number(raw, "region", WHERE)
    if region_no not in regions:
        shown = ", ".join(map(str, sorted(regions)))
        raise bad(f"{WHERE}region {region_no} is not a region of vendor {vendor_no} ({shown})")
    if raw.get("stsToken") is not None or raw.get("stsExpiration") is not None:
        raise bad(f"{WHERE}stsToken: temporary (STS) credentials are not built in cloudrec yet")
    extension = obj(raw, "extensionParams", WHERE)
    for name in ("sse", "tag"):
        if extension.get(name) is not None:
            raise bad(
                f"{WHERE}extensionParams.{name}: server-side encryption and object tags are "
                "not built in cloudrec yet (the files would be stored without them)"
            )
    region = region_id(regions[region_no])
    target = StorageTarget(
        vendor=vendor,
        endpoint=_endpoint(vendor, region, extension),
        bucket=str(text(raw, "bucket", WHERE, max_len=256)),
        access_key=str(text(raw, "accessKey", WHERE, max_len=256)),
        secret_key=str(text(raw, "secretKey", WHERE, max_len=256)),
        region=region,
    )
    return target, parse_prefix(raw)
