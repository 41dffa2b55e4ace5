"""Learning tasks for three fields (`--task examples.<field>:<task>`): each site's data is
generated or ships with scikit-learn, so every example runs as one command (README, Examples)."""
