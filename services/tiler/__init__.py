"""Tiler service: AOI → tiles of a fixed global kilometre grid, over gRPC (`upscaling.v1.TilerService`)."""
