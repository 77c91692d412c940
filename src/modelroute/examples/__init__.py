"""Example route files shipped as package data (the demo reads ``demo.yaml``)."""
