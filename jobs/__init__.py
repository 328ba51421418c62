"""Entry points a user runs or submits with `ray job submit -- python -m jobs.<name>`."""
