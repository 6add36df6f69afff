"""The package's version, where every layer may read it (the package's ``__init__`` imports
the Python entry point lazily, so modules below it do not import ``kdbench`` itself)."""

__version__ = "0.1.0"
