"""Python client of the upscaling service: tile an AOI, run an openEO UDP over every tile, follow the progress,
and get the results as STAC items, downloaded files, a mosaic or a GeoDataFrame.

    from upscaling_client import Client

    with Client("localhost:50051") as client:
        task = client.run("https://.../udp.json", backend="https://openeo.example/openeo/1.2",
                          aoi="aoi.geojson", grid="20x20km", parameters={"year": 2024})
        task.mosaic("region.tif")
"""

from upscaling_client.client import Client, Task
from upscaling_client.errors import (
    AuthenticationError,
    ConflictError,
    DownloadError,
    InvalidArgumentError,
    LimitExceededError,
    MosaicError,
    NotFoundError,
    UnavailableError,
    UpscalingError,
)
from upscaling_client.models import JobInfo, SyncResult, TaskEvent, TaskInfo, Tile, Tiles

__all__ = ["AuthenticationError", "Client", "ConflictError", "DownloadError", "InvalidArgumentError", "JobInfo",
           "LimitExceededError", "MosaicError", "NotFoundError", "SyncResult", "Task", "TaskEvent", "TaskInfo", "Tile",
           "Tiles", "UnavailableError", "UpscalingError"]
