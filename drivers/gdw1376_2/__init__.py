"""Q/GDW 1376.2 local interface (concentrator <-> carrier module): a sans-I/O codec.

Frame (Q/GDW 1376.2 §4.3, §5.2, §5.3; docs/protocols.md §3.1-§3.3; bytes in transmit order)::

    68  L0 L1   C   R1 R2 R3 R4 R5 R6   [ A ]   AFN  DT1 DT2  data unit ...   CS  16
    |   |       |   information field   |       |    |        |               |   end
    |   total   |   (down and up differ)|       |    Fn       |               sum of C .. last
    |   length, DIR PRM mode            |       |    (DT1 one bit, DT2 group) data byte, mod 256
    start  LE, 68..16 inclusive         address field, only when R1.D2 = 1: source(6),
                                        relays(6 x R1.D4-D7, downlink only), destination(6)

    C:  bit7 DIR (0 down from the concentrator, 1 up from the module)
        bit6 PRM (1 from the initiating station, 0 from the responding one)
        bits5..0 communication mode (1 centralised narrowband, 2 distributed, 3 HPLC, ...)
    R (down):  R1  D0 routing bypass, D1 attached node, D2 comm-module flag (address field
                   present), D3 conflict detection, D4-D7 relay level
               R2  D0-D3 channel, D4-D7 error-correction coding
               R3  expected reply byte count        R4 R5  rate (D15 = kbps unit)
               R6  message sequence number SEQ
    R (up):    R1  D0 routing bypass, D2 comm-module flag, D4-D7 relay level (D1, D3 spare)
               R2  D0-D3 channel (D4-D7 spare)
               R3  D0-D3 measured phase, D4-D7 meter channel characteristics
               R4  D0-D3 last-hop command quality, D4-D7 last-hop reply quality
               R5  D0 event flag (D1-D7 spare)      R6  SEQ, echoed from the request

Sources (docs/protocols.md §6): the info-field bit layout is from the liucun0505/SPLCKQ-11
conformance-test tool's header (cQGDW376_2.h) and its decoder (FView3762 display code);
data-unit layouts from two independent public parsers (a C "print_AFNxx" library and a
Q/GDW 10376.2-2019 Python parser), cross-checked against real frames captured in
SPLCKQ-11's CSG_Debug/日志 logs. Facts tagged [M] in comments are not confirmed there.

Framing (start byte, length, checksum) stays apart from meaning (AFN/Fn data units), so
a frame decodes even when its data unit is unknown to us; ``parse_unit`` then gives a
``RawUnit``. The module never touches a port.
"""

from drivers.gdw1376_2.build import command as command
from drivers.gdw1376_2.build import confirm_report as confirm_report
from drivers.gdw1376_2.build import reply_to as reply_to
from drivers.gdw1376_2.build import report as report
from drivers.gdw1376_2.codes import ADDRESS_LEN as ADDRESS_LEN
from drivers.gdw1376_2.codes import AFN as AFN
from drivers.gdw1376_2.codes import DENY_ADDRESSED as DENY_ADDRESSED
from drivers.gdw1376_2.codes import DENY_ID as DENY_ID
from drivers.gdw1376_2.codes import DIR_UP as DIR_UP
from drivers.gdw1376_2.codes import END as END
from drivers.gdw1376_2.codes import INFO_LEN as INFO_LEN
from drivers.gdw1376_2.codes import MAX_FN as MAX_FN
from drivers.gdw1376_2.codes import MAX_FRAME_LEN as MAX_FRAME_LEN
from drivers.gdw1376_2.codes import MAX_RELAYS as MAX_RELAYS
from drivers.gdw1376_2.codes import MIN_FRAME_LEN as MIN_FRAME_LEN
from drivers.gdw1376_2.codes import MODE_MASK as MODE_MASK
from drivers.gdw1376_2.codes import PRM as PRM
from drivers.gdw1376_2.codes import R1_ATTACHED as R1_ATTACHED
from drivers.gdw1376_2.codes import R1_CONFLICT as R1_CONFLICT
from drivers.gdw1376_2.codes import R1_ROUTE_BYPASS as R1_ROUTE_BYPASS
from drivers.gdw1376_2.codes import R1_SLAVE_NODE as R1_SLAVE_NODE
from drivers.gdw1376_2.codes import START as START
from drivers.gdw1376_2.codes import ZERO_ADDRESS as ZERO_ADDRESS
from drivers.gdw1376_2.codes import CommMode as CommMode
from drivers.gdw1376_2.codes import DenyReason as DenyReason
from drivers.gdw1376_2.codes import Direction as Direction
from drivers.gdw1376_2.codes import Edition as Edition
from drivers.gdw1376_2.codes import ProtocolType as ProtocolType
from drivers.gdw1376_2.codes import RouteTask as RouteTask
from drivers.gdw1376_2.codes import describe_deny as describe_deny
from drivers.gdw1376_2.codes import known_code as known_code
from drivers.gdw1376_2.codes import protocol_code as protocol_code
from drivers.gdw1376_2.fields import Cursor as Cursor
from drivers.gdw1376_2.fields import address_bytes as address_bytes
from drivers.gdw1376_2.fields import date_bytes as date_bytes
from drivers.gdw1376_2.fields import latin1 as latin1
from drivers.gdw1376_2.frame import Decoder as Decoder
from drivers.gdw1376_2.frame import DownInfo as DownInfo
from drivers.gdw1376_2.frame import Frame as Frame
from drivers.gdw1376_2.frame import Info as Info
from drivers.gdw1376_2.frame import UpInfo as UpInfo
from drivers.gdw1376_2.frame import check_range as check_range
from drivers.gdw1376_2.frame import checksum as checksum
from drivers.gdw1376_2.frame import decode_frame as decode_frame
from drivers.gdw1376_2.frame import decode_node_address as decode_node_address
from drivers.gdw1376_2.frame import dt_to_fn as dt_to_fn
from drivers.gdw1376_2.frame import encode_frame as encode_frame
from drivers.gdw1376_2.frame import encode_node_address as encode_node_address
from drivers.gdw1376_2.frame import fn_to_dt as fn_to_dt
from drivers.gdw1376_2.module_units import CONCURRENT_EDITION as CONCURRENT_EDITION
from drivers.gdw1376_2.module_units import DATA_INIT as DATA_INIT
from drivers.gdw1376_2.module_units import HARDWARE_INIT as HARDWARE_INIT
from drivers.gdw1376_2.module_units import PARAMETER_INIT as PARAMETER_INIT
from drivers.gdw1376_2.module_units import QUERY_MASTER_ADDRESS as QUERY_MASTER_ADDRESS
from drivers.gdw1376_2.module_units import QUERY_NODE_COUNT as QUERY_NODE_COUNT
from drivers.gdw1376_2.module_units import QUERY_RUN_MODE as QUERY_RUN_MODE
from drivers.gdw1376_2.module_units import QUERY_VENDOR as QUERY_VENDOR
from drivers.gdw1376_2.module_units import ROUTE_PAUSE as ROUTE_PAUSE
from drivers.gdw1376_2.module_units import ROUTE_RESTART as ROUTE_RESTART
from drivers.gdw1376_2.module_units import ROUTE_RESUME as ROUTE_RESUME
from drivers.gdw1376_2.module_units import Command as Command
from drivers.gdw1376_2.module_units import Confirm as Confirm
from drivers.gdw1376_2.module_units import Deny as Deny
from drivers.gdw1376_2.module_units import MasterAddress as MasterAddress
from drivers.gdw1376_2.module_units import RawUnit as RawUnit
from drivers.gdw1376_2.module_units import RunMode as RunMode
from drivers.gdw1376_2.module_units import VendorInfo as VendorInfo
from drivers.gdw1376_2.route_units import AddNodes as AddNodes
from drivers.gdw1376_2.route_units import BroadcastRequest as BroadcastRequest
from drivers.gdw1376_2.route_units import DeleteNodes as DeleteNodes
from drivers.gdw1376_2.route_units import DiscoveredNode as DiscoveredNode
from drivers.gdw1376_2.route_units import MonitorReply as MonitorReply
from drivers.gdw1376_2.route_units import MonitorRequest as MonitorRequest
from drivers.gdw1376_2.route_units import NodeCount as NodeCount
from drivers.gdw1376_2.route_units import NodeInfo as NodeInfo
from drivers.gdw1376_2.route_units import NodePage as NodePage
from drivers.gdw1376_2.route_units import NodePageRequest as NodePageRequest
from drivers.gdw1376_2.route_units import NodeReport as NodeReport
from drivers.gdw1376_2.route_units import ReadReport as ReadReport
from drivers.gdw1376_2.route_units import RouteChange as RouteChange
from drivers.gdw1376_2.route_units import SlaveNode as SlaveNode
from drivers.gdw1376_2.units import Unit as Unit
from drivers.gdw1376_2.units import parse_unit as parse_unit
from drivers.gdw1376_2.units import unit_id as unit_id
