"""Shared core of the upscaling service: configuration, logging, database, broker, gRPC plumbing and grids.

Every service (tiler, dispatcher, monitor, gateway) is a thin entry point over this package.
"""
