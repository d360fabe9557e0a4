"""Talbot's contracts: what the instrument, the plans, the simulator and the reconstructor agree on.

- :mod:`contracts.instrument`: the beamline's Instrument (geometry, detector, PV names);
- :mod:`contracts.scanplan`: the ScanPlan a plan runs (schedule, exposure, stepping);
- :mod:`contracts.simulation`: the simulator's own knobs (phantom, noise, fringes);
- :mod:`contracts.profile`: TOML profiles holding the three;
- :mod:`contracts.frames`: the per-frame record FrameTags and the frame table;
- :mod:`contracts.scanfile`: the raw HDF5 scan file;
- :mod:`contracts.messages`, :mod:`contracts.sockets`: the ZeroMQ frame stream;
- :mod:`contracts.schema`: the JSON Schemas in ``docs/schema/``.

This package imports nothing else of Talbot (an import-linter ``layers`` contract).
"""
