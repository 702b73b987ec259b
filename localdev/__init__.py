"""Local development tooling: the stand-in stack and the demo run."""
