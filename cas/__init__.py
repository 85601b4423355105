"""cas: a content-addressed cache for container image layers."""

__version__ = "0.1.0"

# Seconds a command waits for the store lock before it gives up with a hint. Defined here, the lightest
# module, because the CLI's option defaults need it without importing the store.
DEFAULT_LOCK_TIMEOUT = 600.0
