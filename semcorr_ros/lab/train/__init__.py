"""Training of the project's small learned parts (fusion weights, KBCNet head) on cached features."""
