"""Algorithm builders: each returns a `tff.learning.templates.LearningProcess`."""
