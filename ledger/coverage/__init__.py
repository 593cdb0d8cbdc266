"""Coverage: projections of the log, the household check and their exports."""
