from upscaling_client._proto import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListGridsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListGridsResponse(_message.Message):
    __slots__ = ("grids", "max_tiles")
    GRIDS_FIELD_NUMBER: _ClassVar[int]
    MAX_TILES_FIELD_NUMBER: _ClassVar[int]
    grids: _containers.RepeatedCompositeFieldContainer[Grid]
    max_tiles: int
    def __init__(self, grids: _Optional[_Iterable[_Union[Grid, _Mapping]]] = ..., max_tiles: _Optional[int] = ...) -> None: ...

class Grid(_message.Message):
    __slots__ = ("name", "size_km")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_KM_FIELD_NUMBER: _ClassVar[int]
    name: str
    size_km: int
    def __init__(self, name: _Optional[str] = ..., size_km: _Optional[int] = ...) -> None: ...

class TileAoiRequest(_message.Message):
    __slots__ = ("aoi_geojson", "grid", "full_cells")
    AOI_GEOJSON_FIELD_NUMBER: _ClassVar[int]
    GRID_FIELD_NUMBER: _ClassVar[int]
    FULL_CELLS_FIELD_NUMBER: _ClassVar[int]
    aoi_geojson: str
    grid: str
    full_cells: bool
    def __init__(self, aoi_geojson: _Optional[str] = ..., grid: _Optional[str] = ..., full_cells: _Optional[bool] = ...) -> None: ...

class TileAoiResponse(_message.Message):
    __slots__ = ("tiles", "warnings", "grid")
    TILES_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    GRID_FIELD_NUMBER: _ClassVar[int]
    tiles: _containers.RepeatedCompositeFieldContainer[Tile]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    grid: Grid
    def __init__(self, tiles: _Optional[_Iterable[_Union[Tile, _Mapping]]] = ..., warnings: _Optional[_Iterable[str]] = ..., grid: _Optional[_Union[Grid, _Mapping]] = ...) -> None: ...

class Tile(_message.Message):
    __slots__ = ("id", "zone", "col", "row", "geometry_geojson", "cell_bbox", "epsg", "projected_bounds")
    ID_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    COL_FIELD_NUMBER: _ClassVar[int]
    ROW_FIELD_NUMBER: _ClassVar[int]
    GEOMETRY_GEOJSON_FIELD_NUMBER: _ClassVar[int]
    CELL_BBOX_FIELD_NUMBER: _ClassVar[int]
    EPSG_FIELD_NUMBER: _ClassVar[int]
    PROJECTED_BOUNDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    zone: str
    col: int
    row: int
    geometry_geojson: str
    cell_bbox: _common_pb2.BoundingBox
    epsg: int
    projected_bounds: _common_pb2.BoundingBox
    def __init__(self, id: _Optional[str] = ..., zone: _Optional[str] = ..., col: _Optional[int] = ..., row: _Optional[int] = ..., geometry_geojson: _Optional[str] = ..., cell_bbox: _Optional[_Union[_common_pb2.BoundingBox, _Mapping]] = ..., epsg: _Optional[int] = ..., projected_bounds: _Optional[_Union[_common_pb2.BoundingBox, _Mapping]] = ...) -> None: ...
