"""Thin service entry points over the shared core package `upscaling`."""
