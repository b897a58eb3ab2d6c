"""FLEXMIX evaluation: the task registry, scoring of every model family, metrics, the report and its figures."""
