"""Bundled architecture configs (*.yaml) and trained models (*.pt), read with importlib.resources."""
