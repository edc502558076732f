"""The package version, in a module of its own so that every layer can read it without importing the
package's lazy public API (``unlearn_assert/__init__.py`` sits above everything)."""

__version__ = "0.1.0"
