"""The driver side: job config, validation, the Ray Data plan, resume and the run summary."""
