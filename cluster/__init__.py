"""Cluster start/stop and job submission (`smec cluster`, `smec submit`, `smec jobs`)."""
