"""cas: a content-addressed cache for container image layers."""

__version__ = "0.1.0"
