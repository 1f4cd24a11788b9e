"""The label-efficiency study: plan the probe jobs, label-free baselines, collect the results."""
