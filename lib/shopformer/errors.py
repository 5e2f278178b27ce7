"""Errors that stop a job before it writes; each message names the key, file or column at fault."""


class ShopformerError(Exception):
    """Base class: a job catches these, logs the message and exits non-zero without writing."""


class ConfigError(ShopformerError):
    """A configuration key is missing, unknown or has a value of the wrong kind."""


class SourceError(ShopformerError):
    """An input file is missing or unreadable, or lacks a column the source mapping needs."""


class ReconciliationError(ShopformerError):
    """Counts written do not add up to counts read: something would have been lost."""


class UsageError(ShopformerError):
    """The command line asks for something the job cannot do (exit 2, as argparse's own usage errors)."""

    exit_code = 2
