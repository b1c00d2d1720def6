"""T3DNet Studio core: data, models, compression engine. Never imports Qt."""

__version__ = "0.1.0"
