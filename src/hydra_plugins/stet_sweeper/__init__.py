"""stet's Hydra sweeper: ``hydra/sweeper=stet`` skips the jobs a store records as done.

Hydra imports every module of the ``hydra_plugins`` namespace package at startup to find
its plugins; this package only defines the sweeper class and its config, importing stet
when a sweep starts.
"""
