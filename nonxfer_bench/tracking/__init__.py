"""MLflow: the tracker that logs a run, the metric names and values it logs, and the read-back of logged cells."""
