"""The gateway's live map page: routes, PNG previews of raster results, static files."""
