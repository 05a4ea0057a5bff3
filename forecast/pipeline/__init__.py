"""Scheduled batch pipelines: steps with contracts (hashed outputs, atomic commits, resume), a promotion gate.

``forecast pipeline run configs/pipeline/quickstart.yaml``; see pipelines/README.md for each step's contract.
"""
