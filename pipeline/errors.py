"""The driver side's error for a job that cannot run, shared by every module that checks
settings (config, sampling flags, validation, resources, the lease) so none of them has to
import another for it."""


class ConfigError(ValueError):
    """A job config that cannot run; the message names the offending setting."""
