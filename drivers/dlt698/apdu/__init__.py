"""DL/T 698.45-2017 application layer: the APDUs a concentrator exchanges with a meter.

Client-APDU (clause 8; the request and its optional time tag)::

    tag  choice  PIID  body ...  [00 | 01 date_time_s TI]
    05 GET-Request     01 Normal (OAD)   02 NormalList (SEQUENCE OF OAD)
                       03 Record (OAD RSD RCSD)   05 Next (long-unsigned last block)
    06 SET-Request     01 Normal (OAD Data)
    07 ACTION-Request  01 Normal (OMD Data)

Server-APDU (the answer, then FollowReport and TimeTag, both OPTIONAL: 00 = absent)::

    tag  choice  PIID-ACD  body ...  [00 | 01 FollowReport]  [00 | 01 TimeTag]
    85 GET-Response    01 Normal: OAD, 00 DAR | 01 Data
                       02 NormalList: SEQUENCE OF the same
                       03 Record: OAD RCSD, 00 DAR | 01 SEQUENCE OF row (one Data per column)
                       05 Next: bool last, long-unsigned block, 00 DAR | 01 normal | 02 records
    86 SET-Response    01 Normal: OAD DAR
    87 ACTION-Response 01 Normal: OMD DAR, OPTIONAL Data

LINK-APDU (01 request / 81 response: login and heartbeat) and SECURITY-APDU (10 / 90:
a plain-text APDU in an octet-string plus its verification, random number or MAC) are
parsed too, so plain-text reads "with RN" can be unwrapped. Ciphertext is not decrypted
(that needs the meter's ESAM keys) and MACs are not checked.

PIID (client): bits 0-5 serial number, bit 7 priority. PIID-ACD (server): the same plus
bit 6, "access demanded" (the server has something to report).

The package: `parts` (tags, DAR, results), `messages` (requests and responses),
`link_and_security` (LINK- and SECURITY-APDUs), `codec` (whole APDUs in and out).
"""

from __future__ import annotations

from drivers.dlt698.apdu.codec import (
    Apdu,
    decode_apdu,
    encode_apdu,
    unwrap,
)
from drivers.dlt698.apdu.link_and_security import (
    LinkRequest,
    LinkRequestKind,
    LinkResponse,
    SecurityRequest,
    SecurityResponse,
    Verification,
    VerifyRN,
    VerifyRNMAC,
    VerifySID,
    VerifySIDMAC,
)
from drivers.dlt698.apdu.messages import (
    ActionRequestNormal,
    ActionResponseNormal,
    ClientApdu,
    GetRequestNext,
    GetRequestNormal,
    GetRequestNormalList,
    GetRequestRecord,
    GetResponseNext,
    GetResponseNormal,
    GetResponseNormalList,
    GetResponseRecord,
    Request,
    Response,
    ServerApdu,
    SetRequestNormal,
    SetResponseNormal,
)
from drivers.dlt698.apdu.parts import (
    DAR,
    ApduTag,
    FollowReport,
    ResultNormal,
    ResultRecord,
    Row,
    TimeTag,
    describe_dar,
)

__all__ = [
    "DAR",
    "ActionRequestNormal",
    "ActionResponseNormal",
    "Apdu",
    "ApduTag",
    "ClientApdu",
    "FollowReport",
    "GetRequestNext",
    "GetRequestNormal",
    "GetRequestNormalList",
    "GetRequestRecord",
    "GetResponseNext",
    "GetResponseNormal",
    "GetResponseNormalList",
    "GetResponseRecord",
    "LinkRequest",
    "LinkRequestKind",
    "LinkResponse",
    "Request",
    "Response",
    "ResultNormal",
    "ResultRecord",
    "Row",
    "SecurityRequest",
    "SecurityResponse",
    "ServerApdu",
    "SetRequestNormal",
    "SetResponseNormal",
    "TimeTag",
    "Verification",
    "VerifyRN",
    "VerifyRNMAC",
    "VerifySID",
    "VerifySIDMAC",
    "decode_apdu",
    "describe_dar",
    "encode_apdu",
    "unwrap",
]
