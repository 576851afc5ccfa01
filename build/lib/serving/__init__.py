"""Serving for spade-tf: an embedded TF-Serving-compatible server (gRPC and REST), its client, deployment files.

`serving.server` (ModelServer, `python -m serving.server`) serves SavedModels exported as the export
contract describes; `serving.client` (SpadeClient, `python -m serving.client`) talks to it or to
stock TF Serving. Modules are imported on use, so `python -m serving.server` loads only what it needs.
"""
