"""T3DNet Studio desktop app (PySide6). Imports ``core``; ``core`` never imports this package."""
