"""`python -m upscaling.migrations`: apply pending migrations to DATABASE_URL (what `make migrate` runs)."""

import asyncio
import logging

from upscaling.config import load_settings
from upscaling.logs import configure_logging
from upscaling.migrations import migrate


def main() -> None:
    settings = load_settings()
    configure_logging("migrate", settings.log_level, settings.log_format)
    applied = asyncio.run(migrate(settings.database_url))
    logging.getLogger("migrate").info("migrations applied: %s", applied or "none pending")


if __name__ == "__main__":
    main()
