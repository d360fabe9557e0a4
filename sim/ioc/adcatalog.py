"""The areaDetector PVs of the simulated camera and HDF5 file plugin, with types and enum strings.

Stock ophyd areaDetector classes (``ophyd.areadetector.cam.AreaDetectorCam``,
``ophyd.areadetector.plugins.HDF5Plugin_V34``) connect to, read and stage many PVs; a server must
answer every one, with the record types and enum strings of the areaDetector database templates
(ADBase.template, NDPluginBase.template, NDFile.template, NDFileHDF5.template; ADCore R3-4), or
connection, ``describe_configuration`` and ``stage`` fail.

The tables below list them. Access ``rw`` serves ``NAME`` (setpoint) and ``NAME_RBV`` (readback,
mirrors every accepted put unless a behaviour hook takes over), ``w`` a single writable PV, ``ro``
a read-only PV (its name already ends in ``_RBV`` where areaDetector names it so). Types:
``long``, ``double``, ``enum`` (strings ``|``-separated), ``string`` (char waveform of 256, read
as a string), ``str40`` (a stringin/stringout record, 40 characters), ``wave`` (10 longs).
Behaviour (acquisition, file writing) is attached by
:mod:`sim.ioc.detector` and :mod:`sim.ioc.filewriter` through :meth:`ADPVs.on_put`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from caproto import (
    AccessRights,
    ChannelChar,
    ChannelData,
    ChannelDouble,
    ChannelEnum,
    ChannelInteger,
    ChannelString,
)

INT32_MAX = 2**31 - 1

#: areaDetector NDDataType enum strings (ADCore >= 3.?: Int64/UInt64 inserted before Float32).
DATA_TYPES = "Int8|UInt8|Int16|UInt16|Int32|UInt32|Int64|UInt64|Float32|Float64"
COLOR_MODES = "Mono|Bayer|RGB1|RGB2|RGB3|YUV444|YUV422|YUV421"
DETECTOR_STATES = (
    "Idle|Acquire|Readout|Correct|Saving|Aborting|Error|Waiting|Initializing|Disconnected|Aborted"
)
ATTRIBUTE_STATES = "Attributes file OK|File not found|XML syntax error|Macro substitution error"

#: cam1: (suffix, access, type, default, doc); default "" for enums means index 0.
CAM_TABLE = f"""
Acquire  rw  enum:Done|Acquire  0  start (1) / stop (0) acquiring; put completes at the end
AcquireTime             rw  double                  0.05    exposure time [s], > 0
AcquirePeriod           rw  double                  0.0     frame period [s] (>= exposure + readout)
ImageMode  rw  enum:Single|Multiple|Continuous  0  frames per Acquire: 1, NumImages, until stopped
NumImages               rw  long                    1       frames per Acquire in Multiple mode
NumExposures            rw  long                    1       exposures per image (only 1 simulated)
ArrayCounter            rw  long                    0       frames acquired (put to reset)
ArrayCallbacks          rw  enum:Disable|Enable     1       pass frames to the plugins
ArrayRate_RBV           ro  double                  0.0     frame rate [Hz]
ArraySizeX_RBV          ro  long                    0       frame columns
ArraySizeY_RBV          ro  long                    0       frame rows
ArraySizeZ_RBV          ro  long                    0       third dimension (0: 2-D frames)
ArraySize_RBV           ro  long                    0       frame size [bytes]
DataType                rw  enum:{DATA_TYPES}       3       pixel type (UInt16 only)
ColorMode               rw  enum:{COLOR_MODES}      0       colour mode (Mono only)
DetectorState_RBV       ro  enum:{DETECTOR_STATES}  0       detector state
TriggerMode             rw  enum:Internal|External  0       trigger source (Internal only)
FrameType  rw  enum:Normal|Background|FlatField|DoubleCorrelation  0  AD frame type (unused)
Gain                    rw  double                  1.0     gain (not simulated)
NumImagesCounter_RBV    ro  long                    0       frames of the current Acquire
NumExposuresCounter_RBV ro  long                    0       exposures of the current image
TimeRemaining_RBV       ro  double                  0.0     time left of the exposure [s]
MaxSizeX_RBV            ro  long                    0       sensor columns
MaxSizeY_RBV            ro  long                    0       sensor rows
SizeX                   rw  long                    0       region columns (full sensor only)
SizeY                   rw  long                    0       region rows (full sensor only)
MinX                    rw  long                    0       region start column
MinY                    rw  long                    0       region start row
BinX                    rw  long                    1       binning x (1 only)
BinY                    rw  long                    1       binning y (1 only)
ReverseX                rw  enum:No|Yes             0       mirror x (not simulated)
ReverseY                rw  enum:No|Yes             0       mirror y (not simulated)
Manufacturer_RBV        ro  str40                  Talbot  manufacturer
Model_RBV               ro  str40                  simulated-camera  model
PortName_RBV            ro  str40                  TALBOTCAM  asyn port name (plugins' NDArrayPort)
StatusMessage_RBV       ro  string                  Idle    status message
StringFromServer_RBV    ro  string                  -       last string from the camera
StringToServer_RBV      ro  string                  -       last string to the camera
NDAttributesFile        w   string                  -       NDAttributes XML file (ignored)
Temperature             rw  double                  -20.0   sensor temperature setpoint [C]
TemperatureActual       w   double                  -20.0   sensor temperature [C]
ShutterControl          rw  enum:Close|Open         0       detector shutter (not simulated)
ShutterMode             rw  enum:None|EPICS PV|Detector output  0  detector shutter mode
ShutterOpenDelay        rw  double                  0.0     shutter open delay [s]
ShutterCloseDelay       rw  double                  0.0     shutter close delay [s]
ShutterStatus_RBV       ro  enum:Closed|Open        0       detector shutter status
ShutterStatusEPICS_RBV  ro  enum:Closed|Open        0       EPICS shutter status
ShutterOpenEPICS        w   long                    0       EPICS shutter open command
ShutterCloseEPICS       w   long                    0       EPICS shutter close command
ShutterControlEPICS     w   long                    0       EPICS shutter control
ShutterFanout           w   long                    0       EPICS shutter fanout
AsynIO                  w   long                    0       asyn record (not simulated)
ReadStatus              w   long                    0       read status now
PoolAllocBuffers        ro  long                    0       NDArray pool: allocated buffers
PoolFreeBuffers         ro  long                    0       NDArray pool: free buffers
PoolMaxBuffers          ro  long                    0       NDArray pool: maximum buffers
PoolMaxMem              ro  double                  0.0     NDArray pool: maximum memory [MB]
PoolUsedBuffers         ro  double                  0.0     NDArray pool: used buffers
PoolUsedMem             ro  double                  0.0     NDArray pool: used memory [MB]
DataType_RBV.DISA       ro  long                    0       0: DataType_RBV is valid
"""

#: HDF1: (suffix, access, type, default, doc).
HDF_TABLE = f"""
PluginType_RBV          ro  str40                  NDFileHDF5  plugin type (ophyd checks it)
PortName_RBV            ro  str40                  FileHDF1  asyn port name
NDArrayPort             rw  str40                  TALBOTCAM  source port (the camera)
NDArrayAddress          rw  long                    0       source address
EnableCallbacks         rw  enum:Disable|Enable     0       process frames from the camera
BlockingCallbacks  rw  enum:No|Yes  0  Yes: the frame is written before Acquire_RBV falls
ArrayCallbacks          rw  enum:Disable|Enable     1       pass frames on
ArrayCounter            rw  long                    0       frames received
ArrayRate_RBV           ro  double                  0.0     frame rate [Hz]
DroppedArrays           rw  long                    0       frames dropped (fault injection)
DroppedOutputArrays     rw  long                    0       output frames dropped
DisorderedArrays        rw  long                    0       frames out of order
ArraySize0_RBV  ro  long  0  frame columns (0 until the first frame: unprimed)
ArraySize1_RBV          ro  long                    0       frame rows
ArraySize2_RBV          ro  long                    0       third dimension
ArraySize0              rw  long                    0       array size 0
ArraySize1              rw  long                    0       array size 1
ArraySize2              rw  long                    0       array size 2
ArraySize3              rw  long                    0       array size 3
ArraySize4              rw  long                    0       array size 4
ArraySize5              rw  long                    0       array size 5
ArraySize6              rw  long                    0       array size 6
ArraySize7              rw  long                    0       array size 7
ArraySize8              rw  long                    0       array size 8
ArraySize9              rw  long                    0       array size 9
ArraySizeX_RBV          ro  long                    0       frame columns
ArraySizeY_RBV          ro  long                    0       frame rows
ArraySizeZ_RBV          ro  long                    0       third dimension
ArraySize_RBV           ro  long                    0       frame size [bytes]
NDimensions             rw  long                    0       number of dimensions
Dimensions              rw  wave                    0       dimensions
DataType                rw  enum:{DATA_TYPES}       3       pixel type
ColorMode               rw  enum:{COLOR_MODES}      0       colour mode
BayerPattern_RBV        ro  enum:RGGB|GBRG|GRBG|BGGR  0     Bayer pattern
UniqueId_RBV            ro  long                    0       unique id of the last frame
TimeStamp_RBV           ro  double                  0.0     time stamp of the last frame [s]
EpicsTSSec_RBV          ro  long                    0       EPICS time stamp seconds
EpicsTSNsec_RBV         ro  long                    0       EPICS time stamp nanoseconds
Dim0SA                  rw  long                    0       dimension 0 sub-array
Dim1SA                  rw  long                    0       dimension 1 sub-array
Dim2SA                  rw  long                    0       dimension 2 sub-array
Dim3SA                  rw  long                    0       dimension 3 sub-array
Dim4SA                  rw  long                    0       dimension 4 sub-array
Dim5SA                  rw  long                    0       dimension 5 sub-array
Dim6SA                  rw  long                    0       dimension 6 sub-array
Dim7SA                  rw  long                    0       dimension 7 sub-array
Dim8SA                  rw  long                    0       dimension 8 sub-array
Dim9SA                  rw  long                    0       dimension 9 sub-array
MinCallbackTime         rw  double                  0.0     minimum time between callbacks [s]
MaxArrayRate            rw  double                  0.0     maximum frame rate [Hz]
MaxArrayRate_COUT       w   double                  0.0     maximum frame rate output
MaxByteRate             rw  double                  0.0     maximum byte rate
QueueSize               rw  long                    20      plugin queue size
QueueFree               w   long                    20      free queue slots
QueueFreeLow            w   long                    5       low-water mark
QueueUse                w   long                    0       used queue slots
QueueUseHIGH            w   long                    15      high-water mark
QueueUseHIHI            w   long                    19      high-high-water mark
NumThreads              rw  long                    1       plugin threads
MaxThreads_RBV          ro  long                    1       maximum threads
SortMode                rw  enum:Unsorted|Sorted    0       sort mode
SortSize                rw  long                    10      sort queue size
SortTime                rw  double                  0.1     sort time [s]
SortFree                w   long                    10      free sort slots
SortFreeLow             w   long                    0       low-water mark
NumQueuedArrays         w   long                    0       queued frames
EmptyFreeList           w   long                    0       empty the free list
ProcessPlugin           w   long                    0       process the last frame again
ExecutionTime_RBV       ro  double                  0.0     execution time [ms]
ADCoreVersion_RBV       ro  str40                  3.4.0   ADCore version
DriverVersion_RBV       ro  str40                  3.4.0   driver version
NDAttributesFile        w   string                  -       NDAttributes XML file (ignored)
NDAttributesMacros      w   string                  -       NDAttributes macros
NDAttributesStatus  w  enum:{ATTRIBUTE_STATES}  0  attributes status
AsynIO                  w   long                    0       asyn record
PoolAllocBuffers        ro  long                    0       NDArray pool: allocated buffers
PoolFreeBuffers         ro  long                    0       NDArray pool: free buffers
PoolMaxMem              ro  double                  0.0     NDArray pool: maximum memory [MB]
PoolUsedBuffers         ro  double                  0.0     NDArray pool: used buffers
PoolUsedMem             ro  double                  0.0     NDArray pool: used memory [MB]
FilePath  rw  string  -  directory of the file (a trailing / is added)
FilePathExists_RBV      ro  enum:No|Yes             0       whether FilePath exists
CreateDirectory  rw  long  0  < 0: create up to -N missing directory levels at Capture
FileName                rw  string                  -       file name stem
FileNumber  rw  long  0  file number (AutoIncrement: +1 per opened file)
FileTemplate            rw  string                  %s%s_%6.6d.h5  C format of path, name, number
FullFileName_RBV        ro  string                  -       the file being (or last) written
AutoIncrement           rw  enum:No|Yes             0       increment FileNumber per opened file
AutoSave                rw  enum:No|Yes             0       save automatically
FileWriteMode  rw  enum:Single|Capture|Stream  0  Stream/Capture: frames appended (Single refused)
NumCapture  rw  long  0  frames to capture; 0 = until Capture is put 0
NumCaptured_RBV         ro  long                    0       frames written to the open file
Capture  rw  enum:Done|Capture  0  1: start capturing (open the file); 0: close it
LazyOpen                rw  enum:No|Yes             0       Yes: open the file at the first frame
DeleteDriverFile        rw  enum:No|Yes             0       delete the driver file (ignored)
FileFormat              rw  enum:HDF5               0       file format
TempSuffix              rw  string                  -       temporary suffix while writing (ignored)
ReadFile                rw  enum:Done|Read          0       read a file (not simulated)
WriteFile  rw  enum:Done|Write  0  write a file (Single mode; not simulated)
WriteMessage            w   string                  -       last file-writer message
WriteStatus             w   enum:Write OK|Write error  0    file-writer status
Compression             rw  enum:None|N-bit|szip|zlib|blosc  0  compression (None only)
ZLevel                  rw  long                    6       zlib level
SZipNumPixels           rw  long                    16      szip pixels
BloscCompressor         rw  enum:blosclz|lz4|lz4hc|snappy|zlib|zstd  0  blosc compressor
BloscLevel              rw  long                    5       blosc level
BloscShuffle            rw  enum:None|ByteShuffle|BitShuffle  0  blosc shuffle
NumDataBits             rw  long                    0       N-bit data bits
DataBitsOffset          rw  long                    0       N-bit offset
NumRowChunks  rw  long  0  chunk rows (the file has one frame per chunk)
NumColChunks            rw  long                    0       chunk columns
NumFramesChunks         rw  long                    1       frames per chunk (always 1)
NumFramesFlush          rw  long                    1       frames per flush (always 1)
NDAttributeChunk        rw  long                    0       attribute chunk
BoundaryAlign           rw  long                    0       boundary alignment
BoundaryThreshold       rw  long                    0       boundary threshold
FillValue               rw  double                  0.0     fill value
IOSpeed                 w   double                  0.0     write speed [MB/s]
RunTime                 w   double                  0.0     write time [s]
NumExtraDims            rw  long                    0       extra dimensions (0 only)
ExtraDimSizeN           rw  long                    1       extra dimension N size
ExtraDimSizeX           rw  long                    1       extra dimension X size
ExtraDimSizeY           rw  long                    1       extra dimension Y size
ExtraDimSize3           rw  long                    1       extra dimension 3 size
ExtraDimSize4           rw  long                    1       extra dimension 4 size
ExtraDimSize5           rw  long                    1       extra dimension 5 size
ExtraDimSize6           rw  long                    1       extra dimension 6 size
ExtraDimSize7           rw  long                    1       extra dimension 7 size
ExtraDimSize8           rw  long                    1       extra dimension 8 size
ExtraDimSize9           rw  long                    1       extra dimension 9 size
ExtraDimNameN_RBV       ro  str40                  n       extra dimension N name
ExtraDimNameX_RBV       ro  str40                  x       extra dimension X name
ExtraDimNameY_RBV       ro  str40                  y       extra dimension Y name
ExtraDimName3_RBV       ro  str40                  3       extra dimension 3 name
ExtraDimName4_RBV       ro  str40                  4       extra dimension 4 name
ExtraDimName5_RBV       ro  str40                  5       extra dimension 5 name
ExtraDimName6_RBV       ro  str40                  6       extra dimension 6 name
ExtraDimName7_RBV       ro  str40                  7       extra dimension 7 name
ExtraDimName8_RBV       ro  str40                  8       extra dimension 8 name
ExtraDimName9_RBV       ro  str40                  9       extra dimension 9 name
ExtraDimChunkX          rw  long                    1       extra dimension X chunk
ExtraDimChunkY          rw  long                    1       extra dimension Y chunk
ExtraDimChunk3          rw  long                    1       extra dimension 3 chunk
ExtraDimChunk4          rw  long                    1       extra dimension 4 chunk
ExtraDimChunk5          rw  long                    1       extra dimension 5 chunk
ExtraDimChunk6          rw  long                    1       extra dimension 6 chunk
ExtraDimChunk7          rw  long                    1       extra dimension 7 chunk
ExtraDimChunk8          rw  long                    1       extra dimension 8 chunk
ExtraDimChunk9          rw  long                    1       extra dimension 9 chunk
PositionMode            rw  enum:Off|On             0       position mode (Off only)
PosNameDimN             rw  string                  -       position name N
PosNameDimX             rw  string                  -       position name X
PosNameDimY             rw  string                  -       position name Y
PosNameDim3             rw  string                  -       position name 3
PosNameDim4             rw  string                  -       position name 4
PosNameDim5             rw  string                  -       position name 5
PosNameDim6             rw  string                  -       position name 6
PosNameDim7             rw  string                  -       position name 7
PosNameDim8             rw  string                  -       position name 8
PosNameDim9             rw  string                  -       position name 9
PosIndexDimN            rw  string                  -       position index N
PosIndexDimX            rw  string                  -       position index X
PosIndexDimY            rw  string                  -       position index Y
PosIndexDim3            rw  string                  -       position index 3
PosIndexDim4            rw  string                  -       position index 4
PosIndexDim5            rw  string                  -       position index 5
PosIndexDim6            rw  string                  -       position index 6
PosIndexDim7            rw  string                  -       position index 7
PosIndexDim8            rw  string                  -       position index 8
PosIndexDim9            rw  string                  -       position index 9
DimAttDatasets          rw  enum:No|Yes             0       dimension attribute datasets
StoreAttr  rw  enum:No|Yes  0  store NDAttributes (tags are always stored)
StorePerform            rw  enum:No|Yes             0       store performance data
SWMRMode                rw  enum:Off|On             1       SWMR (always on)
SWMRSupported_RBV       ro  enum:Not supported|Supported  1  SWMR supported
SWMRActive_RBV          ro  enum:Off|Active         0       SWMR active (a file is open)
SWMRCbCounter_RBV       ro  long                    0       SWMR flushes
XMLFileName  rw  string  -  layout XML (ignored: the layout is fixed)
XMLValid_RBV            ro  enum:No|Yes             1       layout XML valid
XMLErrorMsg_RBV         ro  string                  -       layout XML error
"""


@dataclass(frozen=True)
class PVSpec:
    """One row of a catalog table."""

    suffix: str
    access: str  # rw | w | ro
    kind: str  # long | double | enum | string | wave
    default: str
    doc: str
    enum_strings: tuple[str, ...] = ()


def parse_table(table: str) -> list[PVSpec]:
    """Parse a catalog table (see the module docstring); ValueError names the bad row."""
    specs: list[PVSpec] = []
    for line in table.strip().splitlines():
        if not line.strip():
            continue
        parts = line.split(None, 4)
        if len(parts) < 4:
            raise ValueError(f"catalog row {line!r} has fewer than 4 columns")
        suffix, access, kind, default = parts[:4]
        doc = parts[4] if len(parts) > 4 else ""
        enums: tuple[str, ...] = ()
        if kind.startswith("enum:"):
            # enum strings may contain spaces: re-split on the two-space column gap
            _head, _, rest = line.partition("enum:")
            strings, _, tail = rest.partition("  ")
            enums = tuple(strings.split("|"))
            tail_parts = tail.strip().split(None, 1)
            default = tail_parts[0]
            doc = tail_parts[1] if len(tail_parts) > 1 else ""
            kind = "enum"
        if access not in ("rw", "w", "ro"):
            raise ValueError(f"catalog row {suffix!r}: access must be rw, w or ro, got {access!r}")
        if kind not in ("long", "double", "enum", "string", "str40", "wave"):
            raise ValueError(f"catalog row {suffix!r}: unknown type {kind!r}")
        specs.append(PVSpec(suffix, access, kind, default, doc, enums))
    return specs


PutHook = Callable[[Any], Awaitable[Any]]


class HookedPV:
    """A PV whose client puts run a behaviour hook (which may raise to refuse the put).

    Without a hook an accepted put is mirrored to the readback ``rbv``. ``completion``, when
    set, is awaited after the value is stored and before the put is answered (busy records:
    a put-callback completes at the end of the operation). ``read_only`` refuses client puts.
    """

    hook: PutHook | None = None
    rbv: Any = None
    read_only: bool = False
    completion: Callable[[], Awaitable[None]] | None = None

    def check_access(self, host: str, user: str) -> AccessRights:
        if self.read_only:
            return AccessRights.READ
        return AccessRights.READ | AccessRights.WRITE

    async def verify_value(self, value: Any) -> Any:
        value = await super().verify_value(value)  # type: ignore[misc]
        if self.hook is not None:
            result = await self.hook(value)
            return value if result is None else result
        if self.rbv is not None:
            await self.rbv.write(value)
        return value

    async def write_from_dbr(self, *args: Any, **kwargs: Any) -> Any:
        result = await super().write_from_dbr(*args, **kwargs)  # type: ignore[misc]
        if self.completion is not None:
            await self.completion()
        return result


class HookedDouble(HookedPV, ChannelDouble):
    """DOUBLE with a put hook."""


class HookedLong(HookedPV, ChannelInteger):
    """LONG with a put hook."""


class HookedEnum(HookedPV, ChannelEnum):
    """ENUM with a put hook; an index outside the enum strings is refused."""

    async def verify_value(self, value: Any) -> Any:
        if isinstance(value, int) and not 0 <= value < len(self.enum_strings):
            raise ValueError(f"enum index {value} outside 0..{len(self.enum_strings) - 1}")
        if isinstance(value, str) and value not in self.enum_strings:
            raise ValueError(f"{value!r} is not one of {list(self.enum_strings)}")
        return await super().verify_value(value)


class HookedChar(HookedPV, ChannelChar):
    """Char waveform (string) with a put hook."""


class HookedString(HookedPV, ChannelString):
    """STRING (40 characters) with a put hook."""


def _make(spec: PVSpec, *, read_only: bool) -> ChannelData:
    doc = spec.doc
    if spec.kind == "double":
        pv: ChannelData = HookedDouble(value=float(spec.default), precision=4)
    elif spec.kind == "long":
        pv = HookedLong(
            value=int(spec.default), lower_ctrl_limit=-INT32_MAX, upper_ctrl_limit=INT32_MAX
        )
    elif spec.kind == "enum":
        pv = HookedEnum(value=spec.enum_strings[int(spec.default)], enum_strings=spec.enum_strings)
    elif spec.kind == "str40":
        pv = HookedString(value="" if spec.default == "-" else spec.default)
    elif spec.kind == "string":
        value = "" if spec.default == "-" else spec.default
        pv = HookedChar(value=value, max_length=256)
    else:  # wave
        pv = HookedLong(value=[0] * 10, max_length=10)
    assert isinstance(pv, HookedPV)
    pv.read_only = read_only  # clients may not write read-backs; the server writes them
    pv.__doc__ = doc
    return pv


class ADPVs:
    """The PVs of one areaDetector prefix (``DET:cam1:`` ...), built from a catalog table."""

    def __init__(self, prefix: str, table: str, *, overrides: dict[str, str] | None = None):
        self.prefix = prefix
        self.pvdb: dict[str, ChannelData] = {}
        overrides = overrides or {}
        for spec in parse_table(table):
            if spec.suffix in overrides:
                spec = PVSpec(
                    spec.suffix, spec.access, spec.kind, overrides[spec.suffix], spec.doc,
                    spec.enum_strings,
                )  # fmt: skip
            pv = _make(spec, read_only=spec.access == "ro")
            self.pvdb[prefix + spec.suffix] = pv
            if spec.access == "rw":
                rbv = _make(spec, read_only=True)
                rbv.__doc__ = f"readback of {spec.suffix}"
                self.pvdb[prefix + spec.suffix + "_RBV"] = rbv
                assert isinstance(pv, HookedPV)
                pv.rbv = rbv

    def __getitem__(self, suffix: str) -> Any:
        return self.pvdb[self.prefix + suffix]

    def value(self, suffix: str) -> Any:
        """Current value of ``suffix`` (an enum gives its string)."""
        return self[suffix].value

    def on_put(self, suffix: str, hook: PutHook) -> None:
        """Run ``hook(value)`` on every client put to ``suffix`` (raise to refuse the put).

        The hook replaces the automatic readback mirror; it returns None (keep the value) or
        the value to store.
        """
        pv = self[suffix]
        assert isinstance(pv, HookedPV)
        pv.hook = hook

    async def set(self, suffix: str, value: Any) -> None:
        """Server-side write of ``suffix`` and its ``_RBV`` (no hook, no checks)."""
        pv = self[suffix]
        await pv.write(value, verify_value=False)
        rbv = getattr(pv, "rbv", None)
        if rbv is not None:
            await rbv.write(value, verify_value=False)
