"""Localization as a service: ``visloc serve MAP`` answers ``POST /v1/localize`` and ``/v1/retrieve`` over
HTTP with the map loaded once (:mod:`.app`: :func:`~visloc.service.app.create_app`), and ``visloc query``
(:mod:`visloc.client`) asks it.

Modules: :mod:`.config` (limits, queue, workers, timeout, token), :mod:`.inputs` (the form, the image, the
intrinsics), :mod:`.engine` (the map and its localizers), :mod:`.pool` (the bounded queue and workers),
:mod:`.metrics` (Prometheus), :mod:`.schemas` (the JSON answers), :mod:`.commands` (the two commands).

This package's ``__init__`` imports nothing, so that the command line starts without FastAPI or torch.
"""
